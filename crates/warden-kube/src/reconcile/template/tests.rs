//! Unit tests of the template reconciler: the managed policy's life (create, drift, foreign,
//! terminating), Unmanaged clean-up, and the secure defaults.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::labels::{SANDBOX_TEMPLATE_REF_HASH, name_hash};
use crate::crd::{
    EnvVarsInjectionPolicy, NetworkPolicySpec as Rules, PodTemplate, VolumeClaimTemplatesPolicy,
};

const NAME: &str = "python";
const NS: &str = "team-a";
const UID: &str = "uid-tmpl";

fn spec() -> SandboxTemplateSpec {
    SandboxTemplateSpec {
        pod_template: PodTemplate {
            spec: PodSpec {
                containers: vec![Container {
                    name: "agent".into(),
                    image: Some("python:3".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            },
            ..PodTemplate::default()
        },
        volume_claim_templates: Vec::new(),
        service: None,
        network_policy: None,
        network_policy_management: NetworkPolicyManagement::Managed,
        env_vars_injection_policy: EnvVarsInjectionPolicy::default(),
        volume_claim_templates_policy: VolumeClaimTemplatesPolicy::default(),
    }
}

fn template_with(spec: SandboxTemplateSpec) -> SandboxTemplate {
    let mut t = SandboxTemplate::new(NAME, spec);
    t.metadata.namespace = Some(NS.into());
    t.metadata.uid = Some(UID.into());
    t
}

fn template() -> SandboxTemplate {
    template_with(spec())
}

fn rules() -> Rules {
    Rules {
        ingress: vec![NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![NetworkPolicyPort {
                port: Some(IntOrString::Int(8888)),
                protocol: None,
                end_port: None,
            }]),
        }],
        egress: Vec::new(),
    }
}

fn run(t: &SandboxTemplate, observed: &Observed) -> Plan {
    plan(t, observed).unwrap()
}

fn created(plan: &Plan) -> &NetworkPolicy {
    match plan.actions.as_slice() {
        [Action::CreateNetworkPolicy(np)] => np,
        other => panic!("expected one CreateNetworkPolicy, got {other:?}"),
    }
}

/// The policy as the API server returns it after [`plan`] created it.
fn stored(t: &SandboxTemplate) -> NetworkPolicy {
    let mut np = created(&run(t, &Observed::default())).clone();
    np.metadata.uid = Some("uid-np".into());
    np.metadata.resource_version = Some("7".into());
    np
}

fn observed(np: NetworkPolicy) -> Observed {
    Observed {
        network_policy: Some(np),
    }
}

fn foreign_owner() -> OwnerReference {
    OwnerReference {
        api_version: "extensions.agents.x-k8s.io/v1beta1".into(),
        kind: "SandboxTemplate".into(),
        name: "other".into(),
        uid: "uid-other".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn deleting(meta: &mut ObjectMeta) {
    meta.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
}

#[test]
fn managed_without_rules_creates_upstreams_default_policy() {
    let plan = run(&template(), &Observed::default());
    let np = created(&plan);
    assert_eq!(np.metadata.name.as_deref(), Some("python-network-policy"));
    assert_eq!(np.metadata.namespace.as_deref(), Some(NS));
    let owner = &np.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("SandboxTemplate", NAME, UID)
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        np.spec,
        upstream_default_network_policy(NAME, NS).spec,
        "the default rules"
    );
    assert!(plan.problems.is_empty());
}

#[test]
fn managed_with_rules_uses_them_and_selects_the_templates_pods() {
    let plan = run(
        &template_with(SandboxTemplateSpec {
            network_policy: Some(rules()),
            ..spec()
        }),
        &Observed::default(),
    );
    let spec = created(&plan).spec.clone().unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap(),
        BTreeMap::from([(SANDBOX_TEMPLATE_REF_HASH.to_owned(), name_hash(NAME))])
    );
    assert_eq!(
        spec.policy_types.unwrap(),
        vec!["Ingress".to_owned(), "Egress".to_owned()]
    );
    assert_eq!(spec.ingress.unwrap(), rules().ingress);
    assert_eq!(spec.egress, None, "no egress rules: all egress denied");
}

#[test]
fn empty_rules_deny_both_directions() {
    let spec = desired_network_policy_spec(
        NAME,
        NS,
        &SandboxTemplateSpec {
            network_policy: Some(Rules::default()),
            ..spec()
        },
    )
    .unwrap();
    assert_eq!((spec.ingress, spec.egress), (None, None));
    assert_eq!(spec.policy_types.unwrap().len(), 2);
}

#[test]
fn a_matching_policy_is_left_alone() {
    for t in [
        template(),
        template_with(SandboxTemplateSpec {
            network_policy: Some(rules()),
            ..spec()
        }),
    ] {
        let plan = run(&t, &observed(stored(&t)));
        assert_eq!(plan, Plan::default());
    }
}

#[test]
fn server_defaults_are_not_drift() {
    let t = template_with(SandboxTemplateSpec {
        network_policy: Some(rules()),
        ..spec()
    });
    let mut np = stored(&t);
    let spec = np.spec.as_mut().unwrap();
    // The API server fills in the protocol and may write empty lists.
    spec.ingress.as_mut().unwrap()[0].ports.as_mut().unwrap()[0].protocol = Some("TCP".into());
    spec.ingress.as_mut().unwrap()[0].from = Some(Vec::new());
    spec.egress = Some(Vec::new());
    assert_eq!(run(&t, &observed(np)), Plan::default());
}

#[test]
fn drift_is_put_back_with_a_resource_version_precondition() {
    let t = template();
    type Change = Box<dyn Fn(&mut PolicySpec)>;
    let cases: Vec<(&str, Change)> = vec![
        ("ingress opened", Box::new(|s| s.ingress = None)),
        (
            "egress widened",
            Box::new(|s| {
                s.egress.as_mut().unwrap()[0].to.as_mut().unwrap()[0].ip_block = Some(IPBlock {
                    cidr: "0.0.0.0/0".into(),
                    except: None,
                })
            }),
        ),
        (
            "selector changed",
            Box::new(|s| {
                s.pod_selector = Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("x".into(), "y".into())])),
                    match_expressions: None,
                })
            }),
        ),
        (
            "egress type dropped",
            Box::new(|s| s.policy_types = Some(vec!["Ingress".into()])),
        ),
    ];
    for (what, change) in cases {
        let mut np = stored(&t);
        change(np.spec.as_mut().unwrap());
        let plan = run(&t, &observed(np));
        assert_eq!(
            plan.actions,
            vec![Action::UpdateNetworkPolicySpec {
                name: "python-network-policy".into(),
                resource_version: Some("7".into()),
                spec: Box::new(upstream_default_network_policy(NAME, NS).spec.unwrap()),
            }],
            "{what}"
        );
    }
}

#[test]
fn a_changed_template_updates_its_policy() {
    let old = template();
    let new = template_with(SandboxTemplateSpec {
        network_policy: Some(rules()),
        ..spec()
    });
    let plan = run(&new, &observed(stored(&old)));
    match plan.actions.as_slice() {
        [Action::UpdateNetworkPolicySpec { spec, .. }] => {
            assert_eq!(spec.ingress.as_ref().unwrap(), &rules().ingress)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_policy_it_does_not_control_is_reported_not_touched() {
    for owner in [None, Some(foreign_owner())] {
        let mut np = stored(&template());
        np.metadata.owner_references = owner.clone().map(|o| vec![o]);
        np.spec = None;
        let plan = run(&template(), &observed(np));
        assert!(plan.actions.is_empty(), "{owner:?}");
        assert_eq!(plan.problems.len(), 1);
        assert!(
            plan.problems[0].contains("\"python-network-policy\"")
                && plan.problems[0].contains("not enforced"),
            "{}",
            plan.problems[0]
        );
    }
}

#[test]
fn a_terminating_policy_is_waited_for() {
    let mut np = stored(&template());
    deleting(&mut np.metadata);
    np.spec = None;
    assert_eq!(run(&template(), &observed(np)), Plan::default());
}

#[test]
fn a_policy_of_another_name_is_ignored() {
    let mut np = stored(&template());
    np.metadata.name = Some("unrelated".into());
    let plan = run(&template(), &observed(np));
    assert!(matches!(
        plan.actions.as_slice(),
        [Action::CreateNetworkPolicy(_)]
    ));
}

#[test]
fn unmanaged_deletes_only_its_own_policy() {
    let t = template_with(SandboxTemplateSpec {
        network_policy_management: NetworkPolicyManagement::Unmanaged,
        network_policy: Some(rules()),
        ..spec()
    });
    assert_eq!(run(&t, &Observed::default()), Plan::default());

    let own = stored(&template());
    assert_eq!(
        run(&t, &observed(own.clone())).actions,
        vec![Action::DeleteNetworkPolicy {
            name: "python-network-policy".into(),
            uid: Some("uid-np".into()),
        }]
    );

    let mut going = own.clone();
    deleting(&mut going.metadata);
    assert_eq!(run(&t, &observed(going)), Plan::default());

    for owner in [None, Some(foreign_owner())] {
        let mut np = own.clone();
        np.metadata.owner_references = owner.map(|o| vec![o]);
        assert_eq!(
            run(&t, &observed(np)),
            Plan::default(),
            "not ours: kept quietly"
        );
    }
}

#[test]
fn a_template_being_deleted_does_nothing() {
    let mut t = template();
    deleting(&mut t.metadata);
    assert_eq!(run(&t, &Observed::default()), Plan::default());
}

#[test]
fn missing_metadata_is_an_error() {
    for field in ["name", "namespace", "uid"] {
        let mut t = template();
        match field {
            "name" => t.metadata.name = None,
            "namespace" => t.metadata.namespace = Some(String::new()),
            _ => t.metadata.uid = None,
        }
        let err = plan(&t, &Observed::default()).unwrap_err();
        assert_eq!((err.kind, err.field), ("SandboxTemplate", field));
    }
}

#[test]
fn secure_defaults_fill_only_what_is_unset() {
    struct Case {
        what: &'static str,
        management: NetworkPolicyManagement,
        rules: Option<Rules>,
        automount: Option<bool>,
        dns_policy: Option<&'static str>,
        want_automount: Option<bool>,
        want_dns: Option<&'static str>,
    }
    let cases = [
        Case {
            what: "secure by default",
            management: NetworkPolicyManagement::Managed,
            rules: None,
            automount: None,
            dns_policy: None,
            want_automount: Some(false),
            want_dns: Some("None"),
        },
        Case {
            what: "author's token choice kept",
            management: NetworkPolicyManagement::Managed,
            rules: None,
            automount: Some(true),
            dns_policy: None,
            want_automount: Some(true),
            want_dns: Some("None"),
        },
        Case {
            what: "author's DNS policy kept",
            management: NetworkPolicyManagement::Managed,
            rules: None,
            automount: None,
            dns_policy: Some("ClusterFirst"),
            want_automount: Some(false),
            want_dns: Some("ClusterFirst"),
        },
        Case {
            what: "custom rules keep cluster DNS",
            management: NetworkPolicyManagement::Managed,
            rules: Some(rules()),
            automount: None,
            dns_policy: None,
            want_automount: Some(false),
            want_dns: None,
        },
        Case {
            what: "unmanaged keeps cluster DNS",
            management: NetworkPolicyManagement::Unmanaged,
            rules: None,
            automount: None,
            dns_policy: None,
            want_automount: Some(false),
            want_dns: None,
        },
    ];
    for c in cases {
        let template = SandboxTemplateSpec {
            network_policy_management: c.management,
            network_policy: c.rules,
            ..spec()
        };
        let mut pod = PodSpec {
            automount_service_account_token: c.automount,
            dns_policy: c.dns_policy.map(str::to_owned),
            ..PodSpec::default()
        };
        apply_secure_defaults(&template, &mut pod);
        assert_eq!(
            pod.automount_service_account_token, c.want_automount,
            "{}",
            c.what
        );
        assert_eq!(pod.dns_policy.as_deref(), c.want_dns, "{}", c.what);
        let servers = pod.dns_config.as_ref().and_then(|d| d.nameservers.clone());
        if c.want_dns == Some("None") && c.dns_policy.is_none() {
            assert_eq!(servers.unwrap(), PUBLIC_DNS_SERVERS, "{}", c.what);
        } else {
            assert!(servers.is_none(), "{}", c.what);
        }
        let once = pod.clone();
        apply_secure_defaults(&template, &mut pod);
        assert_eq!(pod, once, "{}: idempotent", c.what);
    }
}

#[test]
fn sandbox_spec_copies_the_template_with_defaults() {
    let mut t = spec();
    t.service = Some(true);
    t.volume_claim_templates = vec![crate::crd::PersistentVolumeClaimTemplate::default()];
    let s = sandbox_spec(&t);
    assert_eq!(s.service, Some(true));
    assert_eq!(s.volume_claim_templates.len(), 1);
    assert_eq!(
        s.pod_template.spec.containers,
        t.pod_template.spec.containers
    );
    assert_eq!(
        s.pod_template.spec.automount_service_account_token,
        Some(false)
    );
    assert_eq!(s.pod_template.spec.dns_policy.as_deref(), Some("None"));
    assert_eq!(s.shutdown_time, None);
    assert_eq!(s.operating_mode, OperatingMode::Running);
    assert_eq!(s.shutdown_policy, ShutdownPolicy::Retain);
}
