//! Every event reason the CCM publishes, in one place: its name, its type, and the list the docs
//! test compares with docs/ccm.md.

/// Why the CCM publishes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A Node's provider ID names no Elemento VM (or no VM matches it) at initialization.
    ElementoVmNotFound,
    /// A Node is deleted because its VM no longer exists.
    DeletingNode,
    EnsuredLoadBalancer,
    UpdatedLoadBalancer,
    DeletedLoadBalancer,
    InvalidLoadBalancerAnnotation,
    InvalidLoadBalancerService,
    /// The requested LB name belongs to a load balancer without our ownership proof.
    LoadBalancerNameTaken,
    /// The LB was replaced (name change, or no update route): its address changed.
    LoadBalancerReplaced,
    /// The LB was deleted outside Kubernetes and created again: its address changed.
    LoadBalancerRecreated,
    /// `cancreate` says the cloud cannot create the LB now (capacity); retried with backoff.
    LoadBalancerCapacity,
}

impl Reason {
    pub const ALL: &[Reason] = &[
        Reason::ElementoVmNotFound,
        Reason::DeletingNode,
        Reason::EnsuredLoadBalancer,
        Reason::UpdatedLoadBalancer,
        Reason::DeletedLoadBalancer,
        Reason::InvalidLoadBalancerAnnotation,
        Reason::InvalidLoadBalancerService,
        Reason::LoadBalancerNameTaken,
        Reason::LoadBalancerReplaced,
        Reason::LoadBalancerRecreated,
        Reason::LoadBalancerCapacity,
    ];

    /// The `reason` field of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ElementoVmNotFound => "ElementoVMNotFound",
            Reason::DeletingNode => "DeletingNode",
            Reason::EnsuredLoadBalancer => "EnsuredLoadBalancer",
            Reason::UpdatedLoadBalancer => "UpdatedLoadBalancer",
            Reason::DeletedLoadBalancer => "DeletedLoadBalancer",
            Reason::InvalidLoadBalancerAnnotation => "InvalidLoadBalancerAnnotation",
            Reason::InvalidLoadBalancerService => "InvalidLoadBalancerService",
            Reason::LoadBalancerNameTaken => "LoadBalancerNameTaken",
            Reason::LoadBalancerReplaced => "LoadBalancerReplaced",
            Reason::LoadBalancerRecreated => "LoadBalancerRecreated",
            Reason::LoadBalancerCapacity => "LoadBalancerCapacity",
        }
    }

    /// Warning (something the user should look at) or Normal.
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            Reason::DeletingNode
                | Reason::EnsuredLoadBalancer
                | Reason::UpdatedLoadBalancer
                | Reason::DeletedLoadBalancer
        )
    }
}
