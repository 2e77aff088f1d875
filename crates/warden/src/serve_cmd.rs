//! `warden serve`: the control plane's HTTP API (sandboxes, templates, pools, exec, files,
//! events, the agent-sandbox router contract) over the local driver.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use warden_sandbox::{Driver, LocalConfig, LocalDriver};
use warden_server::{AppState, Auth, StartError, Store};

use crate::EXIT_USAGE;

const SERVE_HELP: &str =
    "The API is documented in docs/openapi.json. Every route but /healthz needs
`Authorization: Bearer <token>`; the token is generated at first start (32 random bytes, hex)
and kept in <data>/token with mode 0600. `warden sandbox` finds it there (--data) or in
WARDEN_TOKEN.

The data directory holds the token, the store (warden.db, SQLite) and the sandboxes. Its
default is /var/lib/warden for root, else $XDG_DATA_HOME/warden, or ~/.local/share/warden.

The tool calls that `warden agent` runs (with the same data directory) wait on are listed and
answered under /v1/approvals, as `warden approvals` does.

Requests carrying X-Sandbox-ID, on any path, follow the kubernetes-sigs/agent-sandbox router
contract: they are forwarded to that sandbox's runtime server (X-Sandbox-Port, default 8888).

The config file declares templates and pools, upserted into the store at every start:

  [templates.python]
  shutdown_after = \"1h\"
  idle_timeout = \"15m\"
  [templates.python.policy]              # the format of `warden run --policy`
  profile = \"default\"

  [pools.python]
  template = \"python\"
  replicas = 4

Exit status: 0 after SIGTERM or SIGINT; 64 for a bad flag, config file or data directory
(including --no-auth on a non-loopback address); 69 when the address cannot be bound; 70
for another host error.

Examples:
  warden serve
  warden serve --listen 127.0.0.1:7070 --data /srv/warden --config warden-serve.toml
  warden serve --listen 0.0.0.0:7070            # other machines need the token";

/// Serve the sandbox API: templates, warm pools, sandboxes, exec, files, events.
#[derive(Debug, Args)]
#[command(after_long_help = SERVE_HELP, after_help = "See `warden serve --help` for auth, the config file and examples.")]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Data directory: token, store, sandboxes [default: /var/lib/warden for root, else
    /// $XDG_DATA_HOME/warden or ~/.local/share/warden].
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
    /// TOML file declaring [templates.NAME] and [pools.NAME], upserted at start.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve without a token. Refused unless --listen is a loopback address.
    #[arg(long)]
    no_auth: bool,
}

fn fail(e: StartError) -> ExitCode {
    say!("warden serve: {e}");
    ExitCode::from(e.exit_code())
}

pub fn main(args: ServeArgs) -> ExitCode {
    if let Err(e) = warden_server::check_listen(args.listen, args.no_auth) {
        return fail(e);
    }
    let Some(data) = args.data.clone().or_else(warden_server::default_data_dir) else {
        say!("warden serve: no data directory: pass --data DIR (HOME and XDG_DATA_HOME are unset)");
        return ExitCode::from(EXIT_USAGE);
    };
    if let Err(e) = warden_server::prepare_data_dir(&data) {
        return fail(e);
    }
    let data = match std::fs::canonicalize(&data) {
        Ok(d) => d,
        Err(e) => return fail(StartError::Usage(format!("--data {}: {e}", data.display()))),
    };
    let config = match &args.config {
        Some(path) => match warden_server::config::load(path) {
            Ok(c) => Some(c),
            Err(e) => return fail(StartError::Usage(format!("--config {e}"))),
        },
        None => None,
    };
    let auth = if args.no_auth {
        Auth::Disabled
    } else {
        match warden_server::auth::load_or_create_token(&data) {
            Ok(t) => Auth::Token(t),
            Err(e) => return fail(StartError::Usage(format!("token: {e}"))),
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(StartError::Host(format!("cannot start the runtime: {e}"))),
    };
    runtime.block_on(serve(args.listen, data, config, auth))
}

/// The driver behind the API.
fn local_driver(data: &std::path::Path, store: &Store) -> Result<Arc<dyn Driver>, StartError> {
    let cfg = LocalConfig::new(data)
        .map_err(|e| StartError::Host(format!("cannot find the warden binary: {e}")))?;
    let driver = LocalDriver::new(cfg, Arc::new(store.clone())).map_err(|e| match e {
        warden_sandbox::DriverError::InvalidArgument { .. } => {
            StartError::Usage(format!("--data {}: {e}", data.display()))
        }
        other => StartError::Host(other.to_string()),
    })?;
    Ok(Arc::new(driver))
}

async fn serve(
    listen: SocketAddr,
    data: PathBuf,
    config: Option<warden_server::ServeConfig>,
    auth: Auth,
) -> ExitCode {
    let store = match Store::open(&data).await {
        Ok(s) => s,
        Err(e) => return fail(StartError::Host(e.to_string())),
    };
    let driver = match local_driver(&data, &store) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let Err(e) = warden_server::bootstrap(driver.as_ref(), &store, config.as_ref()).await {
        return fail(e);
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            say!("warden serve: cannot listen on {listen}: {e}");
            return ExitCode::from(69);
        }
    };
    let local = listener.local_addr().unwrap_or(listen);
    let auth_note = match &auth {
        Auth::Token(_) => format!(
            "token in {}",
            warden_server::auth::token_path(&data).display()
        ),
        Auth::Disabled => "no auth (--no-auth)".to_string(),
    };
    say!(
        "warden serve: listening on http://{local} ({auth_note}); data in {}",
        data.display()
    );
    let state = AppState::new(driver, store, auth).with_agent_runs(data.join("agent-runs"));
    let shutdown = async {
        let stop = crate::stop_signal().await;
        say!("warden serve: {stop}, stopping");
    };
    match warden_server::serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(StartError::Host(format!("serving: {e}"))),
    }
}
