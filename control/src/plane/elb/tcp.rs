//! Network listeners: TCP connections carried to a target, both ways.

use super::forward::{Outstanding, dial};
use super::{Plane, RouteAction};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;

pub(super) async fn serve_tcp(
    plane: Weak<Plane>,
    listener_arn: String,
    socket: tokio::net::TcpListener,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = socket.accept() => {
                let Ok((mut client, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Some(p) = plane.upgrade() else { return };
                let Some(route) = p.route(&listener_arn) else { continue };
                let RouteAction::Forward(group) = &route.default else { continue };
                let Some(target) = group.pick(false) else { continue };
                if !route.admits(&p.fabric, target.addr) {
                    continue;
                }
                target.requests.fetch_add(1, Ordering::Relaxed);
                group.requests.fetch_add(1, Ordering::Relaxed);
                let guard = Outstanding::new(Arc::clone(&target));
                connections.spawn(async move {
                    let _guard = guard;
                    let _ = client.set_nodelay(true);
                    let reach = target.reach();
                    let Ok(Ok(mut upstream)) = dial(&reach, target.addr, Duration::from_secs(10)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        }
    }
}
