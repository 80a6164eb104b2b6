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

use bytes::BytesMut;
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

pub(crate) struct Listener(TcpListener);

impl Listener {
    /// Binds with SO_REUSEPORT (glommio sets it), so every shard listens on
    /// the same port and the kernel spreads connections among them.
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        TcpListener::bind(addr)
            .map(Listener)
            .map_err(io::Error::from)
    }

    pub(crate) async fn accept(&self) -> io::Result<(ReadHalf, WriteHalf, SocketAddr)> {
        let stream = self.0.accept().await.map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        let stream = Rc::new(RefCell::new(stream));
        let read = ReadHalf {
            stream: stream.clone(),
            window: READ_WINDOW_MIN,
        };
        Ok((read, WriteHalf(stream), peer))
    }
}

pub(crate) struct ReadHalf {
    stream: Rc<RefCell<TcpStream>>,
    /// Bytes offered to the next read; follows what reads return.
    window: usize,
}
pub(crate) struct WriteHalf(Rc<RefCell<TcpStream>>);

const READ_WINDOW_MIN: usize = 4 << 10;
const READ_WINDOW_MAX: usize = 256 << 10;

impl ReadHalf {
    /// Appends what the socket has to `buf`; Ok(0) means the peer closed.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let start = buf.len();
        // The read needs an initialised slice, so each read zeroes the
        // window it offers. The window doubles when a read fills it and
        // shrinks when reads come back small, so a trickle of small frames
        // does not pay for a large memset each time.
        buf.resize(start + self.window, 0);
        let stream = &self.stream;
        let result =
            poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf[start..]))
                .await;
        let read = *result.as_ref().unwrap_or(&0);
        buf.truncate(start + read);
        if read == self.window {
            self.window = (self.window * 2).min(READ_WINDOW_MAX);
        } else if read < self.window / 4 {
            self.window = (self.window / 2).max(READ_WINDOW_MIN);
        }
        result
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

    /// Half-closes the socket: the peer reads everything we wrote, then
    /// end of stream. Closing outright while the peer still sends would
    /// make the kernel answer with a reset, which can destroy our last
    /// frames (a close-ok) before the peer reads them. Synchronous on
    /// purpose: holding the stream borrowed across an await would collide
    /// with the read half's poll.
    pub fn shutdown(&self) {
        let fd = self.0.borrow().as_raw_fd();
        // SAFETY: `fd` is the open socket this half shares with its read
        // half; shutdown(2) neither closes nor invalidates it.
        unsafe {
            libc::shutdown(fd, libc::SHUT_WR);
        }
    }
}
