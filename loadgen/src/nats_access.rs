//! NATS credentials for the load generator's connections. NATS servers
//! started by `cluster/up` (and every shipped deployment) refuse anonymous
//! clients, and async-nats ignores `user:pass@` in URLs, so credentials are
//! given here (`cluster/up` writes the producer user's to `$CLUSTER_DIR/env`,
//! and `bench/lib.sh` exports them as `NATS_USER` / `NATS_PASSWORD`).

use clap::Args;

/// How the load generator authenticates to NATS (at most one method).
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAccess {
    /// NATS user (with --nats-password).
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(
        long,
        env = "NATS_PASSWORD",
        requires = "nats_user",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS `.creds` file (instead of a user and password).
    #[arg(long, env = "NATS_CREDS", conflicts_with = "nats_user")]
    pub nats_creds: Option<std::path::PathBuf>,
}

impl NatsAccess {
    /// Connection options carrying these credentials.
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, String> {
        if let Some(path) = &self.nats_creds {
            return async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", path.display()));
        }
        Ok(match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            _ => async_nats::ConnectOptions::new(),
        })
    }
}
