//! Embedded, versioned migrations: `migrations/<backend>/NNNN_name.sql`.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::Backend;

type Set = &'static [(i64, &'static str, &'static str)];

/// Every migration, in order, for each backend. Add new files to both lists (the same
/// number and name); never edit an applied one.
const SQLITE: Set = &[
    (
        1,
        "runs",
        include_str!("../migrations/sqlite/0001_runs.sql"),
    ),
    (
        2,
        "server",
        include_str!("../migrations/sqlite/0002_server.sql"),
    ),
    (
        3,
        "deliveries",
        include_str!("../migrations/sqlite/0003_deliveries.sql"),
    ),
    (
        4,
        "watch",
        include_str!("../migrations/sqlite/0004_watch.sql"),
    ),
    (
        5,
        "concurrency",
        include_str!("../migrations/sqlite/0005_concurrency.sql"),
    ),
    (
        6,
        "intake",
        include_str!("../migrations/sqlite/0006_intake.sql"),
    ),
    (
        7,
        "images",
        include_str!("../migrations/sqlite/0007_images.sql"),
    ),
    (
        8,
        "registries",
        include_str!("../migrations/sqlite/0008_registries.sql"),
    ),
    (
        9,
        "delivery",
        include_str!("../migrations/sqlite/0009_delivery.sql"),
    ),
    (
        10,
        "release_retention",
        include_str!("../migrations/sqlite/0010_release_retention.sql"),
    ),
];
const POSTGRES: Set = &[
    (
        1,
        "runs",
        include_str!("../migrations/postgres/0001_runs.sql"),
    ),
    (
        2,
        "server",
        include_str!("../migrations/postgres/0002_server.sql"),
    ),
    (
        3,
        "deliveries",
        include_str!("../migrations/postgres/0003_deliveries.sql"),
    ),
    (
        4,
        "watch",
        include_str!("../migrations/postgres/0004_watch.sql"),
    ),
    (
        5,
        "concurrency",
        include_str!("../migrations/postgres/0005_concurrency.sql"),
    ),
    (
        6,
        "intake",
        include_str!("../migrations/postgres/0006_intake.sql"),
    ),
    (
        7,
        "images",
        include_str!("../migrations/postgres/0007_images.sql"),
    ),
    (
        8,
        "registries",
        include_str!("../migrations/postgres/0008_registries.sql"),
    ),
    (
        9,
        "delivery",
        include_str!("../migrations/postgres/0009_delivery.sql"),
    ),
    (
        10,
        "release_retention",
        include_str!("../migrations/postgres/0010_release_retention.sql"),
    ),
];

#[derive(Debug)]
struct Embedded(Set);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub(crate) async fn run(
    pool: &sqlx::AnyPool,
    backend: Backend,
) -> Result<(), sqlx::migrate::MigrateError> {
    let set = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    Migrator::new(Embedded(set)).await?.run(pool).await
}
