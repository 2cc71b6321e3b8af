//! `wasi:sockets` as a task with an address of its own sees it.
//!
//! wasmtime-wasi's socket implementation can only allow or refuse an address
//! ([`crate::net::NetworkPolicy::allows`] is plugged into it). An awsvpc or
//! bridge task needs more: its binds must land on its own loopback address,
//! its connections must leave from it (the kernel would pick 127.0.0.1), its
//! `127.0.0.1` must mean itself rather than the host, and names must resolve
//! through skiff's service discovery, not the host's resolver. So the
//! `wasi:sockets` TCP, UDP and name-lookup interfaces are linked a second
//! time, over wasmtime-wasi's own, with [`TaskSocketsView`]: it rewrites
//! addresses and answers names, then delegates every operation to
//! wasmtime-wasi, whose address check still sees (and judges) the real
//! addresses. A guest without a task address passes through unchanged.
//!
//! Privileged ports of task addresses may sit elsewhere on the host (see
//! [`crate::ports`]): addresses going down to wasmtime-wasi are mapped to
//! the host's ports, and addresses coming back up to the guest are mapped
//! back.

use crate::mesh::Mesh;
use crate::net::{NetworkPolicy, SocketUse, resolve_for_task, task_destination};
use crate::ports::PortMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::task::{Context, Poll, Waker};
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddress, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::{ip_name_lookup, tcp, udp};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable, SocketResult};
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// The linker's handle on [`TaskSocketsView`].
pub(crate) struct TaskSockets;

impl HasData for TaskSockets {
    type Data<'a> = TaskSocketsView<'a>;
}

/// wasmtime-wasi's sockets, and the policy that says where they may land.
pub(crate) struct TaskSocketsView<'a> {
    pub(crate) inner: WasiSocketsCtxView<'a>,
    pub(crate) policy: &'a dyn NetworkPolicy,
}

/// Links the rewriting `wasi:sockets` interfaces over wasmtime-wasi's
/// (which must already be in `linker`).
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> TaskSocketsView<'_>,
) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets as s;
    linker.allow_shadowing(true);
    let linked = s::tcp::add_to_linker::<T, TaskSockets>(linker, view)
        .and_then(|()| s::udp::add_to_linker::<T, TaskSockets>(linker, view))
        .and_then(|()| s::ip_name_lookup::add_to_linker::<T, TaskSockets>(linker, view));
    linker.allow_shadowing(false);
    linked
}

impl TaskSocketsView<'_> {
    /// Where a bind of `addr` lands: the unspecified address, 127.0.0.1 and
    /// the task's own address all mean the task's address; nothing else is
    /// the task's to bind.
    fn local(&self, addr: IpSocketAddress) -> SocketResult<IpSocketAddress> {
        let Some(own) = self.policy.task_address() else {
            return Ok(addr);
        };
        let addr = SocketAddr::from(addr);
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() || ip == Ipv4Addr::LOCALHOST || ip == own => {
                let at = SocketAddr::new(own.into(), addr.port());
                let ports = PortMap::current();
                if ports.reserved(at) {
                    // The host port of a privileged one: taken, as far as
                    // the guest can tell.
                    return Err(ErrorCode::AddressInUse.into());
                }
                Ok(ports.host(at).into())
            }
            _ => Err(ErrorCode::AddressNotBindable.into()),
        }
    }

    /// An address from the host, as the guest knows it.
    fn guest(addr: IpSocketAddress) -> IpSocketAddress {
        crate::ports::guest(addr.into()).into()
    }

    /// Where a connection or datagram to `addr` goes: 127.0.0.1 is the task
    /// itself, as `localhost` is in a task of its own network namespace.
    fn remote(&self, addr: IpSocketAddress) -> IpSocketAddress {
        match self.policy.task_address() {
            Some(own) => {
                let a = SocketAddr::from(addr);
                crate::ports::host(SocketAddr::new(task_destination(own, a.ip()), a.port())).into()
            }
            None => addr,
        }
    }

    /// Binds an unbound TCP socket to the task's address (any port), so a
    /// connection leaves from there rather than from 127.0.0.1.
    fn bind_to_task(
        &mut self,
        this: &Resource<TcpSocket>,
        net: &Resource<Network>,
    ) -> SocketResult<()> {
        let Some(own) = self.policy.task_address() else {
            return Ok(());
        };
        let bound = tcp::HostTcpSocket::local_address(&mut self.inner, borrow(this));
        if bound.is_ok() {
            return Ok(());
        }
        let local = SocketAddr::new(own.into(), 0).into();
        // wasmtime-wasi's bind is async only because the address check may
        // be; skiff's answers at once and the bind syscall does not block,
        // so the future is ready on its first poll.
        let start =
            tcp::HostTcpSocket::start_bind(&mut self.inner, borrow(this), borrow(net), local);
        match ready_now(start) {
            Some(result) => result?,
            None => return Err(ErrorCode::Unknown.into()),
        }
        tcp::HostTcpSocket::finish_bind(&mut self.inner, borrow(this))
    }
}

impl TaskSocketsView<'_> {
    /// Where a datagram to `asked` goes ([`Self::remote`]); to a task of
    /// another machine, the agent first makes sure a stand-in for it
    /// listens here, at that very address, to carry it there.
    fn remote_udp(&self, asked: IpSocketAddress) -> IpSocketAddress {
        let remote = self.remote(asked);
        if let Some(own) = self.policy.task_address() {
            let a = SocketAddr::from(asked);
            let wanted = SocketAddr::new(task_destination(own, a.ip()), a.port());
            Mesh::current().stand_in_udp(wanted, remote.into());
        }
        remote
    }

    /// Where a connection to `asked` (as the guest gave it; `remote` as
    /// rewritten for this machine) must go: the mesh's exit if it is a
    /// task address of another machine — after the policy judged the
    /// address asked for, and the exit noted it — else `remote`.
    fn through_mesh(
        &mut self,
        this: &Resource<TcpSocket>,
        asked: IpSocketAddress,
        remote: IpSocketAddress,
    ) -> SocketResult<IpSocketAddress> {
        let Some(own) = self.policy.task_address() else {
            return Ok(remote);
        };
        let asked = SocketAddr::from(asked);
        let wanted = SocketAddr::new(task_destination(own, asked.ip()), asked.port());
        let mesh = Mesh::current();
        if !mesh.is_remote(wanted.ip()) {
            return Ok(remote);
        }
        if !self.policy.allows(wanted, SocketUse::TcpConnect) {
            return Err(ErrorCode::AccessDenied.into());
        }
        let local = tcp::HostTcpSocket::local_address(&mut self.inner, borrow(this))?;
        match mesh.divert(local.into(), wanted) {
            Some(exit) => Ok(exit.into()),
            None => Ok(remote),
        }
    }
}

fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(r.rep())
}

/// Polls `f` once; `None` if it is not ready.
fn ready_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

impl network::Host for TaskSocketsView<'_> {
    fn convert_error_code(
        &mut self,
        error: wasmtime_wasi::p2::SocketError,
    ) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.inner, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.inner, err)
    }
}

impl network::HostNetwork for TaskSocketsView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.inner, this)
    }
}

impl tcp::Host for TaskSocketsView<'_> {}

impl tcp::HostTcpSocket for TaskSocketsView<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        let local = self.local(local_address)?;
        tcp::HostTcpSocket::start_bind(&mut self.inner, this, network, local).await
    }

    fn finish_bind(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        tcp::HostTcpSocket::finish_bind(&mut self.inner, this)
    }

    fn start_connect(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        remote_address: IpSocketAddress,
    ) -> SocketResult<()> {
        let remote = self.remote(remote_address);
        self.bind_to_task(&this, &network)?;
        let remote = self.through_mesh(&this, remote_address, remote)?;
        tcp::HostTcpSocket::start_connect(&mut self.inner, this, network, remote)
    }

    fn finish_connect(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
        tcp::HostTcpSocket::finish_connect(&mut self.inner, this)
    }

    async fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        tcp::HostTcpSocket::start_listen(&mut self.inner, this).await
    }

    fn finish_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        tcp::HostTcpSocket::finish_listen(&mut self.inner, this)
    }

    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    )> {
        tcp::HostTcpSocket::accept(&mut self.inner, this)
    }

    fn local_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        tcp::HostTcpSocket::local_address(&mut self.inner, this).map(Self::guest)
    }

    fn remote_address(&mut self, this: Resource<TcpSocket>) -> SocketResult<IpSocketAddress> {
        let peer = tcp::HostTcpSocket::remote_address(&mut self.inner, borrow(&this)).map_err(
            |e| match e.downcast_ref() {
                // A connection the peer reset has no peer any more: the
                // kernel says ENOTCONN, which wasmtime-wasi reports as
                // invalid-state. wasi-libc asks only about sockets it
                // believes connected and aborts the guest on invalid-state
                // (its own state "cannot" be wrong), so a program that
                // logs its peer after a failure died with a trap and no
                // message. The connection was reset: say so.
                Some(ErrorCode::InvalidState) => ErrorCode::ConnectionReset.into(),
                _ => e,
            },
        )?;
        let mesh = Mesh::current();
        if mesh.is_exit(peer.into()) {
            // Through the exit: the guest's peer is where it connected.
            let local = tcp::HostTcpSocket::local_address(&mut self.inner, this)?;
            return Ok(mesh.peer(local.into(), peer.into()).into());
        }
        Ok(Self::guest(peer))
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        tcp::HostTcpSocket::is_listening(&mut self.inner, this)
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        tcp::HostTcpSocket::address_family(&mut self.inner, this)
    }

    fn set_listen_backlog_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        tcp::HostTcpSocket::set_listen_backlog_size(&mut self.inner, this, value)
    }

    fn keep_alive_enabled(&mut self, this: Resource<TcpSocket>) -> SocketResult<bool> {
        tcp::HostTcpSocket::keep_alive_enabled(&mut self.inner, this)
    }

    fn set_keep_alive_enabled(
        &mut self,
        this: Resource<TcpSocket>,
        value: bool,
    ) -> SocketResult<()> {
        tcp::HostTcpSocket::set_keep_alive_enabled(&mut self.inner, this, value)
    }

    fn keep_alive_idle_time(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        tcp::HostTcpSocket::keep_alive_idle_time(&mut self.inner, this)
    }

    fn set_keep_alive_idle_time(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        tcp::HostTcpSocket::set_keep_alive_idle_time(&mut self.inner, this, value)
    }

    fn keep_alive_interval(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        tcp::HostTcpSocket::keep_alive_interval(&mut self.inner, this)
    }

    fn set_keep_alive_interval(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        tcp::HostTcpSocket::set_keep_alive_interval(&mut self.inner, this, value)
    }

    fn keep_alive_count(&mut self, this: Resource<TcpSocket>) -> SocketResult<u32> {
        tcp::HostTcpSocket::keep_alive_count(&mut self.inner, this)
    }

    fn set_keep_alive_count(&mut self, this: Resource<TcpSocket>, value: u32) -> SocketResult<()> {
        tcp::HostTcpSocket::set_keep_alive_count(&mut self.inner, this, value)
    }

    fn hop_limit(&mut self, this: Resource<TcpSocket>) -> SocketResult<u8> {
        tcp::HostTcpSocket::hop_limit(&mut self.inner, this)
    }

    fn set_hop_limit(&mut self, this: Resource<TcpSocket>, value: u8) -> SocketResult<()> {
        tcp::HostTcpSocket::set_hop_limit(&mut self.inner, this, value)
    }

    fn receive_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        tcp::HostTcpSocket::receive_buffer_size(&mut self.inner, this)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<TcpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        tcp::HostTcpSocket::set_receive_buffer_size(&mut self.inner, this, value)
    }

    fn send_buffer_size(&mut self, this: Resource<TcpSocket>) -> SocketResult<u64> {
        tcp::HostTcpSocket::send_buffer_size(&mut self.inner, this)
    }

    fn set_send_buffer_size(&mut self, this: Resource<TcpSocket>, value: u64) -> SocketResult<()> {
        tcp::HostTcpSocket::set_send_buffer_size(&mut self.inner, this, value)
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        tcp::HostTcpSocket::subscribe(&mut self.inner, this)
    }

    fn shutdown(&mut self, this: Resource<TcpSocket>, how: tcp::ShutdownType) -> SocketResult<()> {
        tcp::HostTcpSocket::shutdown(&mut self.inner, this, how)
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        tcp::HostTcpSocket::drop(&mut self.inner, this)
    }
}

impl udp::Host for TaskSocketsView<'_> {}

impl udp::HostUdpSocket for TaskSocketsView<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<UdpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        let local = self.local(local_address)?;
        udp::HostUdpSocket::start_bind(&mut self.inner, this, network, local).await
    }

    fn finish_bind(&mut self, this: Resource<UdpSocket>) -> SocketResult<()> {
        udp::HostUdpSocket::finish_bind(&mut self.inner, this)
    }

    async fn stream(
        &mut self,
        this: Resource<UdpSocket>,
        remote_address: Option<IpSocketAddress>,
    ) -> SocketResult<(
        Resource<udp::IncomingDatagramStream>,
        Resource<udp::OutgoingDatagramStream>,
    )> {
        let remote = remote_address.map(|a| self.remote_udp(a));
        udp::HostUdpSocket::stream(&mut self.inner, this, remote).await
    }

    fn local_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        udp::HostUdpSocket::local_address(&mut self.inner, this).map(Self::guest)
    }

    fn remote_address(&mut self, this: Resource<UdpSocket>) -> SocketResult<IpSocketAddress> {
        udp::HostUdpSocket::remote_address(&mut self.inner, this).map(Self::guest)
    }

    fn address_family(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        udp::HostUdpSocket::address_family(&mut self.inner, this)
    }

    fn unicast_hop_limit(&mut self, this: Resource<UdpSocket>) -> SocketResult<u8> {
        udp::HostUdpSocket::unicast_hop_limit(&mut self.inner, this)
    }

    fn set_unicast_hop_limit(&mut self, this: Resource<UdpSocket>, value: u8) -> SocketResult<()> {
        udp::HostUdpSocket::set_unicast_hop_limit(&mut self.inner, this, value)
    }

    fn receive_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        udp::HostUdpSocket::receive_buffer_size(&mut self.inner, this)
    }

    fn set_receive_buffer_size(
        &mut self,
        this: Resource<UdpSocket>,
        value: u64,
    ) -> SocketResult<()> {
        udp::HostUdpSocket::set_receive_buffer_size(&mut self.inner, this, value)
    }

    fn send_buffer_size(&mut self, this: Resource<UdpSocket>) -> SocketResult<u64> {
        udp::HostUdpSocket::send_buffer_size(&mut self.inner, this)
    }

    fn set_send_buffer_size(&mut self, this: Resource<UdpSocket>, value: u64) -> SocketResult<()> {
        udp::HostUdpSocket::set_send_buffer_size(&mut self.inner, this, value)
    }

    fn subscribe(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        udp::HostUdpSocket::subscribe(&mut self.inner, this)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        udp::HostUdpSocket::drop(&mut self.inner, this)
    }
}

impl udp::HostIncomingDatagramStream for TaskSocketsView<'_> {
    fn receive(
        &mut self,
        this: Resource<udp::IncomingDatagramStream>,
        max_results: u64,
    ) -> SocketResult<Vec<udp::IncomingDatagram>> {
        let mut datagrams =
            udp::HostIncomingDatagramStream::receive(&mut self.inner, this, max_results)?;
        for d in &mut datagrams {
            d.remote_address = Self::guest(d.remote_address);
        }
        Ok(datagrams)
    }

    fn subscribe(
        &mut self,
        this: Resource<udp::IncomingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        udp::HostIncomingDatagramStream::subscribe(&mut self.inner, this)
    }

    fn drop(&mut self, this: Resource<udp::IncomingDatagramStream>) -> wasmtime::Result<()> {
        udp::HostIncomingDatagramStream::drop(&mut self.inner, this)
    }
}

impl udp::HostOutgoingDatagramStream for TaskSocketsView<'_> {
    fn check_send(&mut self, this: Resource<udp::OutgoingDatagramStream>) -> SocketResult<u64> {
        udp::HostOutgoingDatagramStream::check_send(&mut self.inner, this)
    }

    fn send(
        &mut self,
        this: Resource<udp::OutgoingDatagramStream>,
        mut datagrams: Vec<udp::OutgoingDatagram>,
    ) -> SocketResult<u64> {
        for d in &mut datagrams {
            d.remote_address = d.remote_address.map(|a| self.remote_udp(a));
        }
        udp::HostOutgoingDatagramStream::send(&mut self.inner, this, datagrams)
    }

    fn subscribe(
        &mut self,
        this: Resource<udp::OutgoingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        udp::HostOutgoingDatagramStream::subscribe(&mut self.inner, this)
    }

    async fn drop(&mut self, this: Resource<udp::OutgoingDatagramStream>) -> wasmtime::Result<()> {
        udp::HostOutgoingDatagramStream::drop(&mut self.inner, this).await
    }
}

/// A name skiff answered itself: the addresses, handed out one at a time.
struct Answer(std::vec::IntoIter<IpAddr>);

#[wasmtime_wasi::async_trait]
impl Pollable for Answer {
    async fn ready(&mut self) {}
}

/// Our own answers share the resource table with wasmtime-wasi's lookups;
/// a handle is ours when it is an [`Answer`].
fn as_answer(r: &Resource<ip_name_lookup::ResolveAddressStream>) -> Resource<Answer> {
    Resource::new_borrow(r.rep())
}

impl ip_name_lookup::Host for TaskSocketsView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<ip_name_lookup::ResolveAddressStream>> {
        let Some(own) = self.policy.task_address() else {
            return ip_name_lookup::Host::resolve_addresses(&mut self.inner, network, name);
        };
        // The network handle is the capability to look names up.
        self.inner.table.get(&network)?;
        let addrs = resolve_for_task(self.policy, own, &name).ok_or(ErrorCode::NameUnresolvable)?;
        let answer = self.inner.table.push(Answer(addrs.into_iter()))?;
        Ok(Resource::new_own(answer.rep()))
    }
}

impl ip_name_lookup::HostResolveAddressStream for TaskSocketsView<'_> {
    fn resolve_next_address(
        &mut self,
        this: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> SocketResult<Option<IpAddress>> {
        if let Ok(answer) = self.inner.table.get_mut(&as_answer(&this)) {
            return Ok(answer.0.next().map(IpAddress::from));
        }
        ip_name_lookup::HostResolveAddressStream::resolve_next_address(&mut self.inner, this)
    }

    fn subscribe(
        &mut self,
        this: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let answer = as_answer(&this);
        if self.inner.table.get(&answer).is_ok() {
            return wasmtime_wasi::p2::subscribe(self.inner.table, answer);
        }
        ip_name_lookup::HostResolveAddressStream::subscribe(&mut self.inner, this)
    }

    fn drop(
        &mut self,
        this: Resource<ip_name_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<()> {
        let answer = Resource::<Answer>::new_own(this.rep());
        if self.inner.table.get(&answer).is_ok() {
            self.inner.table.delete(answer)?;
            return Ok(());
        }
        ip_name_lookup::HostResolveAddressStream::drop(&mut self.inner, this)
    }
}
