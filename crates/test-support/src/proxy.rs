//! A TCP proxy on loopback that can lose replies: requests always reach the server, and while
//! told to, the server's answers are read and thrown away — a command runs, its caller never
//! hears back (what a connection dying at the wrong moment looks like). It can also be down: every
//! connection is cut at its next byte and new ones are closed at once (the server stopped).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Forwards connections on its own port to `target`; see the module doc.
#[derive(Debug)]
pub struct LossyProxy {
    port: u16,
    lose_replies: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

impl LossyProxy {
    /// Starts in front of the server of `url` (`scheme://host:port/...`); answers the proxy
    /// and `url` pointed at the proxy.
    pub fn in_front_of(url: &str) -> (Self, String) {
        let mut url = url::Url::parse(url).unwrap();
        let target = format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        );
        let proxy = Self::start(&target);
        url.set_port(Some(proxy.port)).unwrap();
        (proxy, url.to_string())
    }

    /// Starts forwarding to `target` (`host:port`) on a free loopback port.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lose_replies = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let target = target.to_owned();
        let (lose, is_down) = (Arc::clone(&lose_replies), Arc::clone(&down));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if is_down.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let cut = Arc::clone(&is_down);
                std::thread::spawn(move || pump(client_in, server_out, None, &cut));
                let (lose, cut) = (Arc::clone(&lose), Arc::clone(&is_down));
                std::thread::spawn(move || pump(server, client, Some(lose), &cut));
            }
        });
        Self {
            port,
            lose_replies,
            down,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, replies are lost (`true`) or delivered (`false`).
    pub fn lose_replies(&self, lose: bool) {
        self.lose_replies.store(lose, Ordering::SeqCst);
    }

    /// From now on, the server looks stopped (`true`) or is reachable again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side closes or `down` is set, dropping the bytes while
/// `lose` is set.
fn pump(mut from: TcpStream, mut to: TcpStream, lose: Option<Arc<AtomicBool>>, down: &AtomicBool) {
    let mut buffer = [0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) if down.load(Ordering::SeqCst) => break,
            Ok(read) => read,
        };
        if lose
            .as_ref()
            .is_some_and(|lose| lose.load(Ordering::SeqCst))
        {
            continue;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
