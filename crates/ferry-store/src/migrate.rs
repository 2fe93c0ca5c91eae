//! Embedded, versioned migrations. A migration that is the same for both backends is one
//! file, `migrations/common/NNNN_name.sql`; one that differs (PostgreSQL says `BIGINT`
//! where SQLite says `INTEGER`) is two files of the same number and name,
//! `migrations/sqlite/NNNN_name.sql` and `migrations/postgres/NNNN_name.sql`.
//!
//! sqlx records each applied migration's version, name and SHA-384 checksum of its SQL,
//! and refuses to open a database whose recorded checksum differs from the embedded
//! text: never edit an applied migration (the test below pins every checksum). An
//! SQLite store also records the newest version it has in `user_version`; when that is
//! [`LATEST`], opening it skips the migrator.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::Backend;

/// The SQL of one migration.
enum Sql {
    /// The same text for both backends (`migrations/common/`).
    Common(&'static str),
    /// One text per backend (`migrations/sqlite/` and `migrations/postgres/`).
    PerBackend {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl Sql {
    fn text(&self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Sql::Common(sql), _) => sql,
            (Sql::PerBackend { sqlite, .. }, Backend::Sqlite) => sqlite,
            (Sql::PerBackend { postgres, .. }, Backend::Postgres) => postgres,
        }
    }
}

/// `common!("NNNN_name.sql")`: the file in `migrations/common/`.
macro_rules! common {
    ($file:literal) => {
        Sql::Common(include_str!(concat!("../migrations/common/", $file)))
    };
}

/// `per_backend!("NNNN_name.sql")`: the files of that name in `migrations/sqlite/` and
/// `migrations/postgres/`.
macro_rules! per_backend {
    ($file:literal) => {
        Sql::PerBackend {
            sqlite: include_str!(concat!("../migrations/sqlite/", $file)),
            postgres: include_str!(concat!("../migrations/postgres/", $file)),
        }
    };
}

/// Every migration, in order: version, name (what sqlx records as its description) and
/// SQL. Add a new one at the end; never edit an applied one.
const MIGRATIONS: &[(i64, &str, Sql)] = &[
    (1, "runs", per_backend!("0001_runs.sql")),
    (2, "server", per_backend!("0002_server.sql")),
    (3, "deliveries", common!("0003_deliveries.sql")),
    (4, "watch", common!("0004_watch.sql")),
    (5, "concurrency", common!("0005_concurrency.sql")),
    (6, "intake", common!("0006_intake.sql")),
    (7, "images", common!("0007_images.sql")),
    (8, "registries", common!("0008_registries.sql")),
    (9, "delivery", common!("0009_delivery.sql")),
    (
        10,
        "release_retention",
        common!("0010_release_retention.sql"),
    ),
    (11, "delivery_log", common!("0011_delivery_log.sql")),
    (
        12,
        "verification_times",
        common!("0012_verification_times.sql"),
    ),
    (13, "trust", common!("0013_trust.sql")),
    (14, "forge_identities", common!("0014_forge_identities.sql")),
    (15, "fork_approval", common!("0015_fork_approval.sql")),
    (
        16,
        "intake_by_repository",
        common!("0016_intake_by_repository.sql"),
    ),
    (17, "health", common!("0017_health.sql")),
    (18, "notifications", common!("0018_notifications.sql")),
    (19, "live_at", common!("0019_live_at.sql")),
    (20, "commit_status", common!("0020_commit_status.sql")),
    (21, "sessions", common!("0021_sessions.sql")),
    (22, "infra", common!("0022_infra.sql")),
    (23, "infra_plans", common!("0023_infra_plans.sql")),
    (24, "infra_rights", common!("0024_infra_rights.sql")),
    (25, "target_ref", common!("0025_target_ref.sql")),
    (26, "intake_claims", common!("0026_intake_claims.sql")),
    (27, "key_check", common!("0027_key_check.sql")),
];

/// The migrations of one backend, as sqlx applies and records them.
fn migrations(backend: Backend) -> Vec<Migration> {
    MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(sql.text(backend)),
                false,
            )
        })
        .collect()
}

#[derive(Debug)]
struct Embedded(Backend);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move { Ok(migrations(self.0)) })
    }
}

/// The newest migration's version: what an SQLite store records in `user_version` once
/// it has every migration.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

#[tracing::instrument(level = "debug", name = "migrate", skip_all)]
pub(crate) async fn run(
    pool: &sqlx::AnyPool,
    backend: Backend,
) -> Result<(), sqlx::migrate::MigrateError> {
    // An SQLite store that has this build's newest migration says so in its header
    // (`user_version`, one read): the migrator's three queries and checksums are for
    // stores that lack some. Every command opens the store, so this is paid often.
    if backend == Backend::Sqlite {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(pool)
            .await?;
        if version == LATEST {
            return Ok(());
        }
    }
    Migrator::new(Embedded(backend)).await?.run(pool).await?;
    if backend == Backend::Sqlite {
        sqlx::query(&format!("PRAGMA user_version = {LATEST}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every migration as stores in the wild recorded it (the files as they were at
    /// commit 94026f9, one directory per backend, `sha384sum` of each): version, name,
    /// the SHA-384 of SQLite's SQL, of PostgreSQL's.
    const RECORDED: &[(i64, &str, &str, &str)] = &[
        (
            1,
            "runs",
            "ce26e513515b2f8cb800bb5f7713f0f55235bd8d6e28e9906b44b1997345c5eda6211d297cd6c70d3a4634a63f452511",
            "dd459957a521ce49287125b6969eed16ec12cea5b800e2ff6230ea8b8f75918e8309c4ff688f07cf0f04759f157bdf8c",
        ),
        (
            2,
            "server",
            "134b88ac81e3772636aa380d6a9634a777d5e360f8ae159420eb3011bcd4d005cde970912779e5ee250481ed25bcc3d7",
            "382d164c05f23689d4f2157f65415ca6388c4f03bf0bdc75598c965fd4a84b1a0418e2a22ad426cba19f3fd6c245d8d9",
        ),
        (
            3,
            "deliveries",
            "62c18442d28b487627df2c973cb7d41bfa0e05edf432124f2533b632e29a3d63d39422c2515c3589f5fa1c4582d13362",
            "62c18442d28b487627df2c973cb7d41bfa0e05edf432124f2533b632e29a3d63d39422c2515c3589f5fa1c4582d13362",
        ),
        (
            4,
            "watch",
            "0fab154ba4cd0a6976c5651a89cccc8d515f917f09c5178acef8358bbc30e417519a4669b59972359ecaaac24982886d",
            "0fab154ba4cd0a6976c5651a89cccc8d515f917f09c5178acef8358bbc30e417519a4669b59972359ecaaac24982886d",
        ),
        (
            5,
            "concurrency",
            "2a71a4cc39d9bcd4fb1b16158a30f82e51ab59bd30fa19a468c1108d36781676e631c884db5da365a1d6f5d80a866820",
            "2a71a4cc39d9bcd4fb1b16158a30f82e51ab59bd30fa19a468c1108d36781676e631c884db5da365a1d6f5d80a866820",
        ),
        (
            6,
            "intake",
            "2cacdbe4f6be87899a2f38cc5232d7615f53b7234eb936db21d87445237207cd0919c8f520bffaa7ef88d69a310246e7",
            "2cacdbe4f6be87899a2f38cc5232d7615f53b7234eb936db21d87445237207cd0919c8f520bffaa7ef88d69a310246e7",
        ),
        (
            7,
            "images",
            "28943d0683f726efcabc22315dd204c0bedf0590cdfa622b933634a6aeac1682ff3ac982bfd49c62e9982a0ed1505c69",
            "28943d0683f726efcabc22315dd204c0bedf0590cdfa622b933634a6aeac1682ff3ac982bfd49c62e9982a0ed1505c69",
        ),
        (
            8,
            "registries",
            "28acde1beba35c58a52b461bfe2ec786fd13dc6a0e9907e731fa4ce3a48c81782ea330db59dcc92aab2b7ad0f42781ad",
            "28acde1beba35c58a52b461bfe2ec786fd13dc6a0e9907e731fa4ce3a48c81782ea330db59dcc92aab2b7ad0f42781ad",
        ),
        (
            9,
            "delivery",
            "7729b89cc5d081bc45a3479085dabe710d3d5a7354589b51dd8ef13a216660064f7a51668349d9f76d2cee14eab4f6a0",
            "7729b89cc5d081bc45a3479085dabe710d3d5a7354589b51dd8ef13a216660064f7a51668349d9f76d2cee14eab4f6a0",
        ),
        (
            10,
            "release_retention",
            "ea387491e9c6786823e53d56e63ed3fa0bf254c4a0b178c77d5bc637160ae62eb2a47ff91341f9bcc2d1e62b6446bf92",
            "ea387491e9c6786823e53d56e63ed3fa0bf254c4a0b178c77d5bc637160ae62eb2a47ff91341f9bcc2d1e62b6446bf92",
        ),
        (
            11,
            "delivery_log",
            "348588325c5e5268e8220dd7b3f3e2f6815e265c0eac18488b4d9b5dd294dd5386b7beaec3574ce230aaeb092124f8bf",
            "348588325c5e5268e8220dd7b3f3e2f6815e265c0eac18488b4d9b5dd294dd5386b7beaec3574ce230aaeb092124f8bf",
        ),
        (
            12,
            "verification_times",
            "e453652e35322f57ca464b59e6ef5c6985b5015e9e382ef940a9901167c766aa764ec13f0e74295a9985ccf581ec9ed2",
            "e453652e35322f57ca464b59e6ef5c6985b5015e9e382ef940a9901167c766aa764ec13f0e74295a9985ccf581ec9ed2",
        ),
        (
            13,
            "trust",
            "897183f5488892bd49476a8d83092887ad89dc92977a250ad493bf6281c5dd1c06433064c4fb624f141c1312d5d61f55",
            "897183f5488892bd49476a8d83092887ad89dc92977a250ad493bf6281c5dd1c06433064c4fb624f141c1312d5d61f55",
        ),
        (
            14,
            "forge_identities",
            "63728ea83ef3e5902580f2741aa98684d7390d7734ddb688048b70e90cc4c81a1c297e421d76e43434bc9ed6cc79bb84",
            "63728ea83ef3e5902580f2741aa98684d7390d7734ddb688048b70e90cc4c81a1c297e421d76e43434bc9ed6cc79bb84",
        ),
        (
            15,
            "fork_approval",
            "03545996c97d4ebff4f72a0223383705a9ab5a44e8a6bcbb1b9e004648bbac998076f2dc83924970d018a1a9e7a4e287",
            "03545996c97d4ebff4f72a0223383705a9ab5a44e8a6bcbb1b9e004648bbac998076f2dc83924970d018a1a9e7a4e287",
        ),
        (
            16,
            "intake_by_repository",
            "3bd4a3861a65bf587569f2b86119edd44e1bf11fb660ba1bd278943ddf7d634858d1bef360b6453dcca83f1d0be69e4d",
            "3bd4a3861a65bf587569f2b86119edd44e1bf11fb660ba1bd278943ddf7d634858d1bef360b6453dcca83f1d0be69e4d",
        ),
        (
            17,
            "health",
            "71fe883c910f20ae38583173af84d2cd9a3b65e1526f1b4ec52d0787f6cad77f0514f2caaf74758834e9fad0b7568a2d",
            "71fe883c910f20ae38583173af84d2cd9a3b65e1526f1b4ec52d0787f6cad77f0514f2caaf74758834e9fad0b7568a2d",
        ),
        (
            18,
            "notifications",
            "378f2bb7e3775e22279789fcac1b3d8a97dd63ae54814a9c823cdac61ca994d3f8013ab47f19f81b67fb9c6581daaf64",
            "378f2bb7e3775e22279789fcac1b3d8a97dd63ae54814a9c823cdac61ca994d3f8013ab47f19f81b67fb9c6581daaf64",
        ),
        (
            19,
            "live_at",
            "68c538d12b13d5b7fa774574c937710c3448ce00778e156c2457f26a0b10aa7a3b9248de09e1c288cd5a2e77d3112605",
            "68c538d12b13d5b7fa774574c937710c3448ce00778e156c2457f26a0b10aa7a3b9248de09e1c288cd5a2e77d3112605",
        ),
        (
            20,
            "commit_status",
            "1b6c104a88f6c9ac65101e3d8a0694a8fd419ce1d4043751a745cc4117ec19c653317f8b968665552204d2a8f4a2dbe8",
            "1b6c104a88f6c9ac65101e3d8a0694a8fd419ce1d4043751a745cc4117ec19c653317f8b968665552204d2a8f4a2dbe8",
        ),
        (
            21,
            "sessions",
            "2a97ebd288333d1cbcaacf554b52f809993b0bdbe8e182446043c8b11a0a7d685c79c50f92c5ff0bec12c637b080afe7",
            "2a97ebd288333d1cbcaacf554b52f809993b0bdbe8e182446043c8b11a0a7d685c79c50f92c5ff0bec12c637b080afe7",
        ),
        (
            22,
            "infra",
            "22354fb581f8ba6c088eafcbb62a97ecfd437e270d66d4f374f47897e37cb0c1f02c866dc670859d2f724a1814f68a69",
            "22354fb581f8ba6c088eafcbb62a97ecfd437e270d66d4f374f47897e37cb0c1f02c866dc670859d2f724a1814f68a69",
        ),
        (
            23,
            "infra_plans",
            "12680f7480be2e274cc46be96f31ba9c9ac6337f748bb1181ec426d629d74262f375470666f1b9678264a580da479018",
            "12680f7480be2e274cc46be96f31ba9c9ac6337f748bb1181ec426d629d74262f375470666f1b9678264a580da479018",
        ),
        (
            24,
            "infra_rights",
            "0b8026f6ed32190255c2dc6c9874d5c3140c0002e64c16baa36c2d64d737ca882cbc38a5c900e52e77f39c9b5465b06e",
            "0b8026f6ed32190255c2dc6c9874d5c3140c0002e64c16baa36c2d64d737ca882cbc38a5c900e52e77f39c9b5465b06e",
        ),
        (
            25,
            "target_ref",
            "4b77c9b39bc15afe66b99ec27be1a817c61dad8f873349c00dc6143f6a35b2a303bee604bf3acf86fbf961073f2628e3",
            "4b77c9b39bc15afe66b99ec27be1a817c61dad8f873349c00dc6143f6a35b2a303bee604bf3acf86fbf961073f2628e3",
        ),
        (
            26,
            "intake_claims",
            "11016dfe47844861145c45590e2c89fb87f9a9c9154af74508ea2985dd9c3be96512dd2e43aecbf0ccb5b6a488eccfe8",
            "11016dfe47844861145c45590e2c89fb87f9a9c9154af74508ea2985dd9c3be96512dd2e43aecbf0ccb5b6a488eccfe8",
        ),
        (
            27,
            "key_check",
            "fda6f2340690a7f28ded14420a9bb2093821b152e98faa664b6230b4a59704847e4dcaec7c9064501d04321b814cd192",
            "fda6f2340690a7f28ded14420a9bb2093821b152e98faa664b6230b4a59704847e4dcaec7c9064501d04321b814cd192",
        ),
    ];

    /// What sqlx records for each migration (and compares when a store opens) is what
    /// it recorded before: the same version, name and checksum, for each backend. A
    /// released migration adds its row here; no row ever changes.
    #[test]
    fn applied_migrations_keep_their_version_name_and_checksum() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let embedded: Vec<_> = migrations(backend)
                .iter()
                .map(|m| {
                    assert_eq!(m.migration_type, MigrationType::Simple);
                    assert!(!m.no_tx);
                    (
                        m.version,
                        m.description.to_string(),
                        hex::encode(&m.checksum),
                    )
                })
                .collect();
            let recorded: Vec<_> = RECORDED
                .iter()
                .map(|(version, name, sqlite, postgres)| {
                    let sum = match backend {
                        Backend::Sqlite => sqlite,
                        Backend::Postgres => postgres,
                    };
                    (*version, name.to_string(), sum.to_string())
                })
                .collect();
            assert_eq!(
                embedded[..recorded.len()],
                recorded[..],
                "{backend:?}: an applied migration changed"
            );
        }
    }

    /// Every file under `migrations/` is in [`MIGRATIONS`] with its number and name (a
    /// version is common or per backend, never both), and the versions count 1, 2, 3, …
    #[test]
    fn every_migration_file_is_listed_once() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files = Vec::new();
        for dir in ["common", "sqlite", "postgres"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("migrations directory") {
                let name = entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8");
                files.push(format!("{dir}/{name}"));
            }
        }
        files.sort();
        let mut listed = Vec::new();
        for (i, (version, name, sql)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1, "versions count up from 1");
            let dirs: &[&str] = match sql {
                Sql::Common(_) => &["common"],
                Sql::PerBackend { .. } => &["sqlite", "postgres"],
            };
            for dir in dirs {
                listed.push(format!("{dir}/{version:04}_{name}.sql"));
            }
        }
        listed.sort();
        assert_eq!(files, listed);
    }
}
