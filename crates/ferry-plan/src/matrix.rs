//! Matrix expansion: the combinations of a job's matrix, in a stable order.

use ferry_config::Matrix;

/// The most combinations one job may expand to.
pub const MAX_COMBINATIONS: usize = 256;

pub type Combination = Vec<(String, String)>;

/// Every combination: the cartesian product of the axes in the order written, minus
/// `exclude`, plus `include`. Errors when there are more than [`MAX_COMBINATIONS`].
pub fn expand(m: &Matrix) -> Result<Vec<Combination>, usize> {
    let mut combos: Vec<Combination> = vec![Vec::new()];
    for (key, values) in &m.axes {
        let size = combos.len().saturating_mul(values.len());
        if size > MAX_COMBINATIONS {
            return Err(size);
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    if m.axes.is_empty() {
        combos.clear();
    }
    combos.retain(|c| !m.exclude.iter().any(|ex| subset(ex, c)));
    for inc in &m.include {
        if !combos.iter().any(|c| c == inc) {
            combos.push(inc.clone());
        }
    }
    if combos.len() > MAX_COMBINATIONS {
        return Err(combos.len());
    }
    Ok(combos)
}

fn subset(part: &Combination, whole: &Combination) -> bool {
    part.iter().all(|kv| whole.contains(kv))
}

/// The readable name of one expansion: `test (db=16, os=linux)`.
pub fn job_name(base: &str, combo: &Combination) -> String {
    if combo.is_empty() {
        return base.to_string();
    }
    let values: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{base} ({})", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn product_exclude_include() {
        let m = Matrix {
            axes: vec![
                ("db".into(), s(&["15", "16"])),
                ("os".into(), s(&["a", "b"])),
            ],
            exclude: vec![vec![("db".into(), "15".into()), ("os".into(), "b".into())]],
            include: vec![vec![("db".into(), "17".into()), ("os".into(), "a".into())]],
        };
        let names: Vec<String> = expand(&m)
            .unwrap_or_default()
            .iter()
            .map(|c| job_name("t", c))
            .collect();
        assert_eq!(
            names,
            [
                "t (db=15, os=a)",
                "t (db=16, os=a)",
                "t (db=16, os=b)",
                "t (db=17, os=a)"
            ]
        );
    }

    #[test]
    fn too_many() {
        let big: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let m = Matrix {
            axes: vec![("a".into(), big.clone()), ("b".into(), big)],
            ..Default::default()
        };
        assert_eq!(expand(&m), Err(400));
    }
}
