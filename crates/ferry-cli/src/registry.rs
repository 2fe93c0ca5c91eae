//! `ferry registry list|login|logout`: a repository's registry logins, used for pulls
//! and pushes of images on that host. Passwords are read from standard input (never
//! from an argument), sealed with the secret key, and never shown again.

use clap::{Args, Subcommand};
use ferry_server::api::{Removed, settings};
use ferry_store::RegistryLogin;
use std::io::Read as _;

use crate::args::RepoScope;
use crate::{Failure, exit, local};

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
    #[command(flatten)]
    pub scope: RepoScope,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// The repository's logins (hosts and users).
    List,
    /// Log in to HOST (e.g. registry.example.com or 127.0.0.1:5000); the password is
    /// read from standard input.
    Login {
        host: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input (the only way to give it).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the login on HOST.
    Logout { host: String },
}

fn read_password() -> Result<String, Failure> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        Failure::usage(format!("cannot read the password from standard input: {e}"))
    })?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Failure::usage("the password on standard input is empty"));
    }
    Ok(password)
}

pub async fn registry(args: RegistryArgs) -> Result<u8, Failure> {
    if args.scope.remote() {
        return remote(args).await;
    }
    let local = local::open(&args.scope.dir, &args.scope.store).await?;
    let repo = &local.repository_id;
    match args.command {
        RegistryCommand::List => {
            let logins = local.store.registry_logins(repo).await?;
            print_logins(&logins);
        }
        RegistryCommand::Login { host, username, .. } => {
            let password = read_password()?;
            let key = ferry_store::SecretKey::load_or_create(local.store.data_dir())
                .map_err(|e| Failure::failed(format!("cannot load the secret key: {e}")))?;
            local
                .store
                .set_registry_login(&key, repo, &host, &username, &password, None)
                .await?;
            println!("saved the login of {username} on {host}");
        }
        RegistryCommand::Logout { host } => {
            if !local.store.delete_registry_login(repo, &host).await? {
                return Err(Failure::usage(format!("there is no login on {host}")));
            }
            println!("removed the login on {host}");
        }
    }
    Ok(exit::OK)
}

async fn remote(args: RegistryArgs) -> Result<u8, Failure> {
    let (c, repo) = args.scope.client()?;
    match args.command {
        RegistryCommand::List => {
            let list: settings::RegistryList = c.get(&format!("/repos/{repo}/registries")).await?;
            print_logins(&list.registries);
        }
        RegistryCommand::Login { host, username, .. } => {
            let body = settings::SetRegistry {
                username,
                password: read_password()?,
            };
            let _: settings::RegistryOne = c
                .put(&format!("/repos/{repo}/registries/{host}"), &body)
                .await?;
            println!("saved the login of {} on {host}", body.username);
        }
        RegistryCommand::Logout { host } => {
            let _: Removed = c
                .delete(&format!("/repos/{repo}/registries/{host}"), &())
                .await?;
            println!("removed the login on {host}");
        }
    }
    Ok(exit::OK)
}

fn print_logins(logins: &[RegistryLogin]) {
    if logins.is_empty() {
        println!("no registry logins");
        return;
    }
    println!("{:<40}  USER", "HOST");
    for l in logins {
        println!("{:<40}  {}", l.host, l.username);
    }
}
