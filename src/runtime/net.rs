//! Sockets on a shard: a listener per shard on the shared AMQP port, and a
//! TCP stream split into a read half and a write half that separate tasks
//! own. glommio has no native split; its stream keeps separate read and
//! write sources, so the halves share it and borrow it only inside a poll.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};

/// Reserves `addr`'s port with SO_REUSEPORT before the shards bind it, so
/// port 0 resolves to one ephemeral port that every shard then shares. The
/// returned socket is bound but never listens, so the kernel hands it no
/// connections; keep it for the life of the process.
pub fn reserve_port(addr: SocketAddr) -> io::Result<(socket2::Socket, SocketAddr)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let local = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    Ok((socket, local))
}

pub struct Listener(TcpListener);

impl Listener {
    /// Binds with SO_REUSEPORT (glommio sets it), so every shard listens on
    /// the same port and the kernel spreads connections among them.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        TcpListener::bind(addr)
            .map(Listener)
            .map_err(io::Error::from)
    }

    pub async fn accept(&self) -> io::Result<(ReadHalf, WriteHalf, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        let stream = Rc::new(RefCell::new(stream));
        Ok((ReadHalf(stream.clone()), WriteHalf(stream), peer))
    }
}

pub struct ReadHalf(Rc<RefCell<TcpStream>>);
pub struct WriteHalf(Rc<RefCell<TcpStream>>);

impl ReadHalf {
    /// Reads what is available into `buf`; 0 means the peer closed.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }
}

impl WriteHalf {
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let written =
                poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[written..];
        }
        Ok(())
    }

    /// Shuts both directions, so a reader blocked on this socket returns.
    /// Synchronous on purpose: holding the stream borrowed across an await
    /// would collide with the read half's poll.
    pub fn shutdown(&self) {
        let fd = self.0.borrow().as_raw_fd();
        // SAFETY: `fd` is the open socket this half shares with its read
        // half; shutdown(2) neither closes nor invalidates it.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}
