//! `warden webhook ...`: the webhook sources and rules of a running `warden serve`, and what
//! became of each delivery.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hyper::Method;
use warden_server::client::{Client, DEFAULT_SERVER, with_query};
use warden_server::webhooks::api::{DeliveryList, WebhooksView};
use warden_server::webhooks::{Outcome, Source};

use crate::sandbox_cmd::{Failure, find_token, print_json, table, usage};

const WEBHOOK_HELP: &str = "\
Webhooks are configured in `warden serve --config` ([webhooks.github], [webhooks.alertmanager],
[webhooks.pagerduty], [webhooks.generic.NAME] with their secrets, and [[webhooks.rules]]; see
`warden serve --help`). These commands only read.

Outcomes of a delivery: accepted (rules filed tasks), ignored (no rule applied, or a GitHub
ping), rejected (bad or missing signature or secret, a body that is not the source's JSON, a
template naming a field the payload lacks; the reason says which), duplicate (its delivery
id had been accepted already: a replay, nothing started).

The server and token are found as for `warden sandbox`: --server or WARDEN_SERVER (default
http://127.0.0.1:7070), WARDEN_TOKEN or the token file of --data.

Exit status: 0 on success, 1 when the server refused, 64 for bad arguments, 69 when the
server is unreachable.

Examples:
  warden webhook ls
  warden webhook deliveries --outcome rejected
  warden webhook deliveries --source github --limit 20 --json";

/// Webhook sources, rules and deliveries of a running `warden serve`.
#[derive(Debug, Args)]
#[command(after_long_help = WEBHOOK_HELP, after_help = "See `warden webhook --help` for outcomes and examples.")]
pub struct WebhookArgs {
    /// The server's URL.
    #[arg(long, global = true, value_name = "URL", env = "WARDEN_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// The server's data directory, to read its token file (unless WARDEN_TOKEN is set).
    #[arg(long, global = true, value_name = "DIR", env = "WARDEN_DATA")]
    data: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// The configured sources (where each posts, where its secret is read from) and rules.
    Ls,
    /// Deliveries received, newest first, with their outcome, reason and tasks.
    Deliveries(DeliveriesArgs),
}

#[derive(Debug, Args)]
struct DeliveriesArgs {
    /// Only this source: github, alertmanager, pagerduty or generic:NAME.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Only this outcome: accepted, ignored, rejected or duplicate.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Option<String>,
    /// At most this many (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: u32,
}

pub fn main(args: WebhookArgs) -> ExitCode {
    crate::sandbox_cmd::run_client("webhook", run(args))
}

async fn run(args: WebhookArgs) -> Result<ExitCode, Failure> {
    // Arguments first, so a bad one is a usage error whatever the server.
    if let WebhookCommand::Deliveries(d) = &args.command {
        check_deliveries(d)?;
    }
    let token = find_token(args.data.as_deref())?;
    let client = Client::new(&args.server, token).map_err(|e| usage(e.to_string()))?;
    match args.command {
        WebhookCommand::Ls => ls(&client, args.json).await,
        WebhookCommand::Deliveries(d) => deliveries(&client, d, args.json).await,
    }
}

fn check_deliveries(d: &DeliveriesArgs) -> Result<(), Failure> {
    if let Some(s) = &d.source
        && Source::parse(s).is_none()
    {
        return Err(usage(format!(
            "--source: `{s}` is not a source; use {}",
            Source::FORMS
        )));
    }
    if let Some(o) = &d.outcome
        && Outcome::parse(o).is_none()
    {
        return Err(usage(format!(
            "--outcome: `{o}` is not an outcome; use one of {}",
            Outcome::NAMES
        )));
    }
    if !(1..=1000).contains(&d.limit) {
        return Err(usage(format!(
            "--limit: {} is out of range; use 1 to 1000",
            d.limit
        )));
    }
    Ok(())
}

async fn ls(client: &Client, json: bool) -> Result<ExitCode, Failure> {
    let view: WebhooksView = client
        .json(Method::GET, "/v1/webhooks", None::<&()>)
        .await?;
    if json {
        print_json(&view);
        return Ok(ExitCode::SUCCESS);
    }
    if view.sources.is_empty() {
        println!("no webhook source is configured ([webhooks] in `warden serve --config`)");
    } else {
        table(
            &["SOURCE", "PATH", "SECRET FROM"],
            view.sources
                .iter()
                .map(|s| {
                    let from = match (&s.secret.secret_file, &s.secret.secret_env) {
                        (Some(f), _) => format!("file {}", f.display()),
                        (None, Some(e)) => format!("env ${e}"),
                        (None, None) => String::new(),
                    };
                    vec![s.source.clone(), s.path.clone(), from]
                })
                .collect(),
        );
    }
    if !view.rules.is_empty() {
        println!();
        table(
            &["RULE", "SOURCE", "WHEN", "REPO", "AGENT"],
            view.rules
                .iter()
                .map(|r| {
                    let mut when = Vec::new();
                    let mut add = |k: &str, v: &Option<String>| {
                        if let Some(v) = v {
                            when.push(format!("{k}={v}"));
                        }
                    };
                    add("event", &r.event);
                    add("action", &r.action);
                    add("repository", &r.repository);
                    add("prefix", &r.comment_prefix);
                    add("status", &r.status);
                    add("alertname", &r.alertname);
                    add("event_type", &r.event_type);
                    for (k, v) in &r.labels {
                        when.push(format!("{k}={v}"));
                    }
                    for (k, v) in &r.matches {
                        when.push(format!("{k}={v}"));
                    }
                    vec![
                        r.name.clone(),
                        r.source.clone(),
                        if when.is_empty() {
                            "any".into()
                        } else {
                            when.join(" ")
                        },
                        r.repo.clone().unwrap_or_default(),
                        r.agent.clone().unwrap_or_else(|| "warden".into()),
                    ]
                })
                .collect(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn deliveries(client: &Client, d: DeliveriesArgs, json: bool) -> Result<ExitCode, Failure> {
    let limit = d.limit.to_string();
    let path = with_query(
        "/v1/webhooks/deliveries",
        &[
            ("limit", Some(&limit)),
            ("source", d.source.as_deref()),
            ("outcome", d.outcome.as_deref()),
        ],
    );
    let list: DeliveryList = client.json(Method::GET, &path, None::<&()>).await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    if list.deliveries.is_empty() {
        println!("no deliveries");
        return Ok(ExitCode::SUCCESS);
    }
    table(
        &[
            "RECEIVED",
            "SOURCE",
            "EVENT",
            "DELIVERY",
            "OUTCOME",
            "STATUS",
            "TASKS / REASON",
        ],
        list.deliveries
            .iter()
            .map(|r| {
                let detail = if r.task_ids.is_empty() {
                    r.reason.clone().unwrap_or_default()
                } else {
                    r.task_ids.join(",")
                };
                vec![
                    r.received_at.rfc3339(),
                    r.source.clone(),
                    r.event.clone().unwrap_or_default(),
                    r.delivery_id.clone().unwrap_or_default(),
                    r.outcome.as_str().to_string(),
                    r.status_code.to_string(),
                    one_line(&detail, 100),
                ]
            })
            .collect(),
    );
    Ok(ExitCode::SUCCESS)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}
