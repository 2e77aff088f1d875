//! Condition types and reasons in the `status.conditions` of Sandboxes and SandboxClaims, as
//! upstream's controllers set them.

/// Condition types.
pub mod types {
    /// Sandbox and SandboxClaim: the sandbox serves.
    pub const READY: &str = "Ready";
    /// Sandbox: administratively suspended (its pod deleted).
    pub const SUSPENDED: &str = "Suspended";
    /// Sandbox: copied from its pod's `PodScheduled` condition.
    pub const POD_SCHEDULED: &str = "PodScheduled";
    /// Sandbox and SandboxClaim: the pod reached a terminal phase.
    pub const FINISHED: &str = "Finished";
}

/// Reasons of a Sandbox's conditions.
pub mod sandbox {
    /// `Ready=True`: the pod, and the service when asked for, are ready.
    pub const DEPENDENCIES_READY: &str = "DependenciesReady";
    /// `Ready=False`: the pod or the service is not ready yet.
    pub const DEPENDENCIES_NOT_READY: &str = "DependenciesNotReady";
    /// `Ready=False`: `operatingMode` is Suspended.
    pub const SANDBOX_SUSPENDED: &str = "SandboxSuspended";
    /// `Ready=False` and `Finished=True`: the pod succeeded.
    pub const POD_SUCCEEDED: &str = "PodSucceeded";
    /// `Ready=False` and `Finished=True`: the pod failed.
    pub const POD_FAILED: &str = "PodFailed";
    /// `Ready=False`: `shutdownTime` has passed.
    pub const SANDBOX_EXPIRED: &str = "SandboxExpired";
    /// `Ready=False`: reconciling failed.
    pub const RECONCILER_ERROR: &str = "ReconcilerError";
    /// `Ready=False`: more than one pod matches the sandbox.
    pub const MULTIPLE_PODS: &str = "MultiplePods";
    /// `Ready=False`: the spec cannot be acted on.
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// `Suspended=True`: the pod is gone.
    pub const POD_TERMINATED: &str = "PodTerminated";
    /// `Suspended=False`: running as asked.
    pub const NOT_SUSPENDED: &str = "NotSuspended";
    /// `Suspended=False`: suspending; the pod is being deleted.
    pub const POD_TERMINATING: &str = "PodTerminating";
    /// `Suspended=False`: a pod of that name exists that the sandbox does not own.
    pub const POD_NOT_OWNED: &str = "PodNotOwned";
    /// `Suspended=Unknown`: the pod's state could not be read.
    pub const POD_STATE_UNKNOWN: &str = "PodStateUnknown";
}

/// Reasons of a SandboxClaim's `Ready=False` condition (and the sandbox reasons it mirrors).
pub mod claim {
    /// The warm pool's SandboxTemplate does not exist.
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// `spec.warmPoolRef` names no SandboxWarmPool.
    pub const WARM_POOL_NOT_FOUND: &str = "WarmPoolNotFound";
    /// The sandbox to adopt belongs to someone else.
    pub const ADOPTION_CONFLICT: &str = "AdoptionConflict";
    /// The claim's Sandbox is being created.
    pub const SANDBOX_CREATE_PENDING: &str = "SandboxCreatePending";
    /// `additionalPodMetadata` has a label or annotation that is not allowed.
    pub const INVALID_METADATA: &str = "InvalidMetadata";
    /// `env` was given but the template's `envVarsInjectionPolicy` does not allow it.
    pub const ENV_VARS_INJECTION_REJECTED: &str = "EnvVarsInjectionRejected";
    /// The claim's `lifecycle` expired it.
    pub const CLAIM_EXPIRED: &str = "ClaimExpired";
    /// `volumeClaimTemplates` was given but the template's policy does not allow it, or it
    /// conflicts with the template's.
    pub const VOLUME_CLAIM_TEMPLATES_ERROR: &str = "VolumeClaimTemplatesError";
    /// Reconciling failed.
    pub const RECONCILER_ERROR: &str = "ReconcilerError";
    /// The Sandbox in the claim's status is gone.
    pub const SANDBOX_MISSING: &str = "SandboxMissing";
    /// The claim's Sandbox expired.
    pub const SANDBOX_EXPIRED: &str = "SandboxExpired";
    /// The claim's Sandbox is not ready yet.
    pub const SANDBOX_NOT_READY: &str = "SandboxNotReady";
}
