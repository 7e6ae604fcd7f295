//! Stand-ins for what the local control plane lacks: there is no kubelet, no Gateway API
//! or SMI or Istio install and no data plane here. Each behaves like the real thing as far as weir can tell, is named for what
//! it stands in for, and runs only through the `weir-sim` binary, never in production.

pub mod gateway_api_crds;
pub mod istio_crds;
pub mod kubelet;
pub mod smi_crds;
pub mod traffic;
