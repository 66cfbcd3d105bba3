//! A Service's network: its container ports, the ClusterIP Service other pods reach it
//! by, and the `<name>-public` Service (LoadBalancer or NodePort) for published ports,
//! so that only what Docker published is reachable from outside the cluster.

use super::workload::Svc;
use super::{names, Cx, EdgeServiceType, Object};
use crate::desired::model::service::PortSpec;
use k8s_openapi::api::core::v1::{ContainerPort, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// What the workload needs from the Services.
pub(super) struct Ports {
    /// Every exposed and published container port, once.
    pub container: Vec<ContainerPort>,
    /// The ClusterIP Service's name, when there is one: a StatefulSet names it as its
    /// governing Service.
    pub cluster_service: Option<String>,
}

/// The container ports and the Services of `s`, pushed with `source` as their origin.
pub(super) fn build(cx: &mut Cx, s: &mut Svc, source: &str) -> Ports {
    let svc = s.spec;
    let mut ports: Vec<(u16, &'static str)> = svc.expose.iter().map(|p| (*p, "TCP")).collect();
    ports.extend(svc.ports.iter().map(|p| (p.container, protocol(p))));
    ports.sort();
    ports.dedup();
    let k8s_service = names::service_name(s.name);
    if k8s_service != s.name {
        s.warn("metadata.name", format!("a Kubernetes Service name must start with a letter: it is `{k8s_service}`, so other services reach it by that name"));
    }
    let cluster_service = (!ports.is_empty()).then(|| {
        cluster(cx, s, &k8s_service, &ports, source);
        k8s_service.clone()
    });
    public(cx, s, &k8s_service, source);
    Ports {
        container: ports
            .iter()
            .map(|(p, proto)| ContainerPort {
                container_port: *p as i32,
                name: Some(port_name(proto, *p)),
                protocol: Some(proto.to_string()),
                ..Default::default()
            })
            .collect(),
        cluster_service,
    }
}

/// The ClusterIP Service: every container port, under the name the other Services use
/// for this one (Docker's network alias).
fn cluster(cx: &mut Cx, s: &mut Svc, name: &str, ports: &[(u16, &'static str)], source: &str) {
    if s.node() {
        s.warn("spec.expose", format!("the ClusterIP Service `{name}` reaches one node's pod per connection: on a cluster of several nodes, scrape the pods through Kubernetes service discovery (role: pod or endpoints) to see every node"));
    }
    let ports = ports
        .iter()
        .map(|(p, proto)| service_port(proto, *p, IntOrString::Int(*p as i32)))
        .collect();
    let service = service(
        cx,
        name,
        s.labels.clone(),
        s.selector.clone(),
        "ClusterIP",
        ports,
    );
    cx.push(Object::Service(service), source);
}

/// The `<name>-public` Service: the published ports, on their host port. A port
/// published on loopback only stays private (reached by `kubectl port-forward`), and
/// what the Service type cannot keep — a pinned address, a chosen node port — is
/// warned.
fn public(cx: &mut Cx, s: &mut Svc, name: &str, source: &str) {
    let edge = cx.opts.edge_service_type;
    let mut ports = Vec::new();
    for (i, p) in s.spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        match p.host_ip.as_deref() {
            Some(ip) if ip.starts_with("127.") || ip == "::1" || ip == "localhost" => {
                s.warn(field, format!("published on {ip} only: no public Service; reach it with `kubectl port-forward`"));
                continue;
            }
            Some(ip) if ip != "0.0.0.0" && ip != "::" && !ip.is_empty() => {
                s.warn(field.clone(), format!("bound to host address {ip}: the {} Service does not pin an address (set your provider's load-balancer IP annotation)", edge.service_type()));
            }
            _ => {}
        }
        if edge == EdgeServiceType::NodePort {
            s.warn(field, format!("host port {} becomes a node port Kubernetes assigns from 30000-32767 (read it with `kubectl get service`), not {}", p.host, p.host));
        }
        ports.push(service_port(
            protocol(p),
            p.host,
            IntOrString::Int(p.container as i32),
        ));
    }
    if ports.is_empty() {
        return;
    }
    ports.sort_by(|a, b| (a.port, &a.protocol).cmp(&(b.port, &b.protocol)));
    ports.dedup_by(|a, b| a.port == b.port && a.protocol == b.protocol);
    let service = service(
        cx,
        &format!("{name}-public"),
        s.labels.clone(),
        s.selector.clone(),
        edge.service_type(),
        ports,
    );
    cx.push(Object::Service(service), source);
}

/// A Service of `type_` in the namespace, sending to the pods `selector` matches.
pub(super) fn service(
    cx: &Cx,
    name: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    type_: &str,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: cx.meta(name, labels),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Port `port` of a Service, named as the container port it shares the number with.
fn service_port(proto: &str, port: u16, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(port_name(proto, port)),
        port: port as i32,
        target_port: Some(target),
        protocol: Some(proto.to_string()),
        ..Default::default()
    }
}

fn protocol(p: &PortSpec) -> &'static str {
    if p.protocol.as_str() == "udp" {
        "UDP"
    } else {
        "TCP"
    }
}

/// `tcp-8080`: unique per pod, as Kubernetes requires of port names.
fn port_name(proto: &str, port: u16) -> String {
    format!("{}-{port}", proto.to_ascii_lowercase())
}
