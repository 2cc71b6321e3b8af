//! The control plane's own data plane: the load balancers (listeners,
//! routing, target health, draining). It knows nothing of the rest of the
//! control plane; the core configures it ([`elb::Plane::sync`]) and asks it
//! about targets.

pub mod elb;
