//! The committed OpenAPI document matches the code, covers every route, and its schemas
//! match the JSON the real types produce.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn doc() -> Value {
    serde_json::from_str(&warden_server::openapi::document()).unwrap()
}

#[test]
fn committed_document_is_current() {
    let generated = warden_server::openapi::document();
    let path = committed_path();
    if std::env::var_os("WARDEN_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from what the code generates; regenerate it with\n  \
         WARDEN_BLESS=1 cargo test -p warden-server --test openapi\nand commit the result"
    );
}

#[test]
fn every_route_is_documented() {
    let doc = doc();
    let paths = doc["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for (path, methods) in warden_server::api::route_table() {
        let openapi_path = path.replace("{*", "{");
        for m in methods {
            if paths.get(&openapi_path).and_then(|p| p.get(*m)).is_none() {
                missing.push(format!("{} {openapi_path}", m.to_uppercase()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document: {missing:?}"
    );
    // And nothing documented that is not served.
    let served: BTreeSet<String> = warden_server::api::route_table()
        .iter()
        .flat_map(|(p, ms)| {
            ms.iter()
                .map(move |m| format!("{m} {}", p.replace("{*", "{")))
        })
        .collect();
    for (p, item) in paths {
        for m in item.as_object().unwrap().keys() {
            assert!(
                served.contains(&format!("{m} {p}")),
                "documented but not served: {m} {p}"
            );
        }
    }
}

fn props(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has no properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn schemas_match_the_real_types() {
    use warden_sandbox::*;
    use warden_sandboxd::proto::*;
    let doc = doc();
    let now = SystemTime::now();
    let info = SandboxInfo {
        id: "s".into(),
        template: "t".into(),
        pool: Some("p".into()),
        pool_member: false,
        phase: Phase::Ready,
        launch: Launch::Warm,
        created_at: now,
        shutdown_at: Some(now),
        idle_timeout: Some(Duration::from_secs(60)),
        last_activity: now,
        labels: Default::default(),
        message: Some("m".into()),
    };
    let template = Template {
        name: "t".into(),
        policy: Default::default(),
        shutdown_after: Some(Duration::from_secs(1)),
        idle_timeout: Some(Duration::from_secs(1)),
        workspace_quota: Some(1),
    };
    let cases: Vec<(&str, Value)> = vec![
        ("Sandbox", serde_json::to_value(&info).unwrap()),
        ("Template", serde_json::to_value(&template).unwrap()),
        (
            "PoolSpec",
            serde_json::to_value(PoolSpec {
                name: "p".into(),
                template: "t".into(),
                replicas: 1,
            })
            .unwrap(),
        ),
        (
            "PoolStatus",
            serde_json::to_value(PoolStatus {
                name: "p".into(),
                template: "t".into(),
                replicas: 1,
                ready: 1,
                starting: 0,
            })
            .unwrap(),
        ),
        (
            "CreateRequest",
            serde_json::to_value(CreateRequest {
                template: "t".into(),
                shutdown_after: Some(Duration::from_secs(1)),
                idle_timeout: Some(Duration::from_secs(1)),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "ClaimRequest",
            serde_json::to_value(ClaimRequest {
                pool: "p".into(),
                shutdown_after: Some(Duration::from_secs(1)),
                idle_timeout: Some(Duration::from_secs(1)),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "ExecRequest",
            serde_json::to_value(ExecRequest::new(Command::Shell("x".into()))).unwrap(),
        ),
        (
            "ExecResult",
            serde_json::to_value(ExecResult {
                stdout: String::new(),
                stderr: String::new(),
                exit_code: 0,
                timed_out: false,
                signal: Some(9),
                duration_ms: 1.0,
                truncated: false,
            })
            .unwrap(),
        ),
        (
            "FileEntry",
            serde_json::to_value(FileEntry {
                name: "a".into(),
                size: 1,
                kind: EntryType::File,
                modified_at: "x".into(),
                mode: "0644".into(),
            })
            .unwrap(),
        ),
        (
            "DirListing",
            serde_json::to_value(DirListing {
                path: ".".into(),
                entries: vec![],
            })
            .unwrap(),
        ),
        (
            "SandboxEvent",
            serde_json::to_value(SandboxEvent {
                time: now,
                sandbox: "s".into(),
                kind: "created".into(),
                message: String::new(),
            })
            .unwrap(),
        ),
        (
            "PendingApproval",
            serde_json::to_value(warden_agent::run::PendingApproval {
                run_id: "run-1".into(),
                call_id: "c".into(),
                tool: "Bash".into(),
                call: "Bash(ls)".into(),
                input: serde_json::json!({"command": "ls"}),
                basis: "Bash(ls *)".into(),
                requested_at: "2030-01-01T00:00:00Z".into(),
                deadline: "2030-01-01T00:10:00Z".into(),
            })
            .unwrap(),
        ),
        (
            "Error",
            serde_json::to_value(ErrorBody {
                code: ErrorCode::NotFound,
                message: "m".into(),
            })
            .unwrap(),
        ),
    ];
    for (schema, value) in cases {
        assert_eq!(
            keys(&value),
            props(&doc, schema),
            "schema {schema} drifted from the type"
        );
    }
    // An approval's answer takes `approved` and `reason`: the fields of an Answer but `by`,
    // which the server sets.
    let answer = serde_json::to_value(warden_agent::run::Answer {
        approved: true,
        reason: Some("r".into()),
        by: "api".into(),
    })
    .unwrap();
    let mut expected = keys(&answer);
    expected.remove("by");
    assert_eq!(props(&doc, "ApprovalDecision"), expected);
    // Every ExecEvent field is described.
    let event_props = props(&doc, "ExecEvent");
    for e in [
        ExecEvent::Started { pid: 1 },
        ExecEvent::Stdout { data: "x".into() },
        ExecEvent::Exit {
            exit_code: 0,
            timed_out: false,
            signal: Some(1),
            duration_ms: 1.0,
        },
        ExecEvent::Error {
            code: ErrorCode::Internal,
            message: "m".into(),
        },
    ] {
        let v = serde_json::to_value(&e).unwrap();
        assert!(keys(&v).is_subset(&event_props), "{v}");
    }
}
