//! Reading records from rows. [`Column`] converts one column to a field's type (the
//! store keeps booleans as 0/1 and states as words); `record!` declares,
//! from one list of fields, a record's column list and the function that reads it, so
//! the columns selected and the fields read can never disagree.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{DeploymentKind, DeploymentStatus, Error, Result, Status};

/// One column of a row as a field of a record.
pub(crate) trait Column: Sized {
    fn read(row: &AnyRow, name: &str) -> Result<Self>;
}

macro_rules! plain_columns {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn read(row: &AnyRow, name: &str) -> Result<Self> {
                Ok(row.try_get(name)?)
            }
        }
    )*};
}

plain_columns!(String, i64, Option<String>, Option<i64>);

/// A pull request's facts, stored as JSON.
impl Column for Option<crate::PullRequest> {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        let text: Option<String> = row.try_get(name)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(format!("{name}: {e}"))))
            .transpose()
    }
}

impl Column for bool {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        Ok(row.try_get::<i64, _>(name)? != 0)
    }
}

/// A state stored as its word.
fn word<T>(row: &AnyRow, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    let s: String = row.try_get(name)?;
    parse(&s).ok_or_else(|| Error::Corrupt(format!("unknown {name} `{s}`")))
}

impl Column for Status {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        word(row, name, Status::parse)
    }
}

impl Column for DeploymentStatus {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        word(row, name, DeploymentStatus::parse)
    }
}

impl Column for DeploymentKind {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        word(row, name, DeploymentKind::parse)
    }
}

impl Column for crate::NotificationStatus {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        word(row, name, crate::NotificationStatus::parse)
    }
}

impl Column for crate::Health {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        word(row, name, crate::Health::parse)
    }
}

impl Column for Option<crate::Health> {
    fn read(row: &AnyRow, name: &str) -> Result<Self> {
        let s: Option<String> = row.try_get(name)?;
        s.map(|s| {
            crate::Health::parse(&s).ok_or_else(|| Error::Corrupt(format!("unknown {name} `{s}`")))
        })
        .transpose()
    }
}

/// `record!(COLUMNS, read_fn, Type { field, … } + { other: value, … })` declares
/// `const COLUMNS: &str` (the fields, as column names) and
/// `fn read_fn(&AnyRow) -> Result<Type>`, reading each field with [`Column`] and
/// setting the fields after `+` (those not stored in the row) to their values.
macro_rules! record {
    ($cols:ident, $vis:vis $read:ident, $ty:ident { $($field:ident),+ $(,)? } $(+ { $($extra:ident: $value:expr),+ $(,)? })?) => {
        const $cols: &str = stringify!($($field),+);

        $vis fn $read(row: &sqlx::any::AnyRow) -> $crate::Result<$ty> {
            Ok($ty {
                $($field: $crate::row::Column::read(row, stringify!($field))?,)+
                $($($extra: $value,)+)?
            })
        }
    };
}

pub(crate) use record;
