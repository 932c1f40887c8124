//! [`TcpRelay`]: a TCP relay on loopback that a test can cut, to make a database or a cache
//! unreachable for one process without stopping the server others share.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Relays every connection to `target` until [`TcpRelay::cut`]: then the open connections are
/// closed and new ones are closed as soon as they are accepted, until [`TcpRelay::restore`].
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Listens on a free loopback port.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                if *cut.borrow_and_update() {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    relay(client, server, &mut cut).await;
                });
            }
        });
        Ok(TcpRelay { addr, cut, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
}

/// Copies both ways until either side closes or the relay is cut.
async fn relay(mut client: TcpStream, mut server: TcpStream, cut: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = async { drop(cut.wait_for(|&cut| cut).await) } => {
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
    }
}
