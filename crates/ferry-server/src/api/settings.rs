//! A repository's settings: variables and secrets (for the repository or one
//! environment), and registry logins. Secret values and passwords go in and never come
//! out; every change lands in the audit log.

use axum::Json;
use axum::extract::{Path, Query, State};
use ferry_store::{RegistryLogin, SecretInfo, Variable};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Body, Removed};
use crate::auth::{AsAdmin, AsDeveloper, Caller, InRepo};
use crate::{ApiError, AppState};

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// An environment; none: the repository's own (for a listing: every scope).
    pub environment: Option<String>,
}

/// `PUT …/variables/{name}` and `PUT …/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetValue {
    pub value: String,
    /// An environment; none: the repository's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// Which variable or secret was set (never its value).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SettingRef {
    /// Empty for the repository's own.
    pub environment: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VariableList {
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct VariableSet {
    pub variable: SettingRef,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SecretSet {
    pub secret: SettingRef,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegistryList {
    pub registries: Vec<RegistryLogin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegistryOne {
    pub registry: Option<RegistryLogin>,
}

/// `PUT …/registries/{host}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRegistry {
    pub username: String,
    /// Sealed at once; never returned.
    pub password: String,
}

/// An environment named in a request must be a valid name (it becomes part of paths).
pub(crate) fn check_environment(env: &str) -> Result<(), ApiError> {
    if env.is_empty() || ferry_config::is_environment_name(env) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{env}` is not an environment name"
        )))
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if ferry_config::is_env_name(name) && !name.starts_with("FERRY_") {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "`{name}` is not a variable name: letters, digits and `_`, not starting with a digit or FERRY_"
        )))
    }
}

/// How the audit log names a variable or secret: `ENV/NAME`, or `NAME` for the
/// repository's own.
fn scoped(env: &str, name: &str) -> String {
    if env.is_empty() {
        name.to_string()
    } else {
        format!("{env}/{name}")
    }
}

/// Which of the two kinds of configuration a request is about.
#[derive(Clone, Copy)]
enum Setting {
    Variable,
    Secret,
}

impl Setting {
    fn word(self) -> &'static str {
        match self {
            Setting::Variable => "variable",
            Setting::Secret => "secret",
        }
    }
}

async fn set_setting(
    s: AppState,
    caller: Caller,
    repo: ferry_store::Repository,
    name: String,
    body: SetValue,
    kind: Setting,
) -> Result<SettingRef, ApiError> {
    check_name(&name)?;
    let env = body.environment.unwrap_or_default();
    check_environment(&env)?;
    let by = caller.label();
    match kind {
        Setting::Variable => {
            s.store
                .set_variable(&repo.id, &env, &name, &body.value, Some(&by))
                .await?
        }
        Setting::Secret => {
            s.store
                .set_secret(
                    &s.key,
                    &repo.id,
                    &env,
                    &name,
                    body.value.as_bytes(),
                    Some(&by),
                )
                .await?
        }
    }
    let action = format!("{}.set", kind.word());
    s.store
        .audit(Some(&repo.id), &by, &action, &scoped(&env, &name), None)
        .await?;
    Ok(SettingRef {
        environment: env,
        name,
    })
}

/// `DELETE …/variables/{name}` (`SECRET == false`) and `…/secrets/{name}`.
pub(crate) async fn delete<const SECRET: bool>(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Path((_, name)): Path<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Removed>, ApiError> {
    let kind = if SECRET {
        Setting::Secret
    } else {
        Setting::Variable
    };
    let env = q.environment.unwrap_or_default();
    check_environment(&env)?;
    let removed = match kind {
        Setting::Variable => s.store.delete_variable(&repo.id, &env, &name).await?,
        Setting::Secret => s.store.delete_secret(&repo.id, &env, &name).await?,
    };
    if !removed {
        return Err(ApiError::not_found(format!(
            "there is no {} `{name}` here",
            kind.word()
        )));
    }
    let action = format!("{}.delete", kind.word());
    s.store
        .audit(
            Some(&repo.id),
            &caller.label(),
            &action,
            &scoped(&env, &name),
            None,
        )
        .await?;
    Ok(Json(Removed { removed: name }))
}

pub(crate) async fn variables(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsDeveloper>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<VariableList>, ApiError> {
    Ok(Json(VariableList {
        variables: s
            .store
            .variables(&repo.id, q.environment.as_deref())
            .await?,
    }))
}

pub(crate) async fn set_variable(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Path((_, name)): Path<(String, String)>,
    Body(body): Body<SetValue>,
) -> Result<Json<VariableSet>, ApiError> {
    let variable = set_setting(s, caller, repo, name, body, Setting::Variable).await?;
    Ok(Json(VariableSet { variable }))
}

pub(crate) async fn secrets(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsDeveloper>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<SecretList>, ApiError> {
    Ok(Json(SecretList {
        secrets: s
            .store
            .secret_names(&repo.id, q.environment.as_deref())
            .await?,
    }))
}

pub(crate) async fn set_secret(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Path((_, name)): Path<(String, String)>,
    Body(body): Body<SetValue>,
) -> Result<Json<SecretSet>, ApiError> {
    let secret = set_setting(s, caller, repo, name, body, Setting::Secret).await?;
    Ok(Json(SecretSet { secret }))
}

pub(crate) async fn registries(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsDeveloper>,
) -> Result<Json<RegistryList>, ApiError> {
    Ok(Json(RegistryList {
        registries: s.store.registry_logins(&repo.id).await?,
    }))
}

pub(crate) async fn set_registry(
    State(s): State<AppState>,
    InRepo(repo, caller, _): InRepo<AsAdmin>,
    Path((_, host)): Path<(String, String)>,
    Body(body): Body<SetRegistry>,
) -> Result<Json<RegistryOne>, ApiError> {
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(ApiError::invalid(format!(
            "`{host}` is not a registry host (e.g. registry.example.com or 127.0.0.1:5000)"
        )));
    }
    if body.username.is_empty() || body.password.is_empty() {
        return Err(ApiError::invalid("username and password must not be empty"));
    }
    s.store
        .set_registry_login(
            &s.key,
            &repo.id,
            &host,
            &body.username,
            &body.password,
            Some(&caller.label()),
        )
        .await?;
    let logins = s.store.registry_logins(&repo.id).await?;
    Ok(Json(RegistryOne {
        registry: logins.into_iter().find(|l| l.host == host),
    }))
}

pub(crate) async fn delete_registry(
    State(s): State<AppState>,
    InRepo(repo, ..): InRepo<AsAdmin>,
    Path((_, host)): Path<(String, String)>,
) -> Result<Json<Removed>, ApiError> {
    if !s.store.delete_registry_login(&repo.id, &host).await? {
        return Err(ApiError::not_found(format!(
            "repository `{}` has no login on {host}",
            repo.name
        )));
    }
    Ok(Json(Removed { removed: host }))
}
