//! A real cluster, started by the test as root: a GlusterFS replica-3
//! volume (three bricks on this host, a private glusterd in a network
//! namespace of the test's own, since glusterd refuses loopback addresses),
//! mounted twice over FUSE, one Sealpost node on each mount, and HAProxy in
//! front in TCP mode with `send-proxy-v2` and health checks.
//!
//! It shows: journal mail through HAProxy while one node is killed with
//! SIGKILL and restarted keeps every message that got `250`, exactly once;
//! POP3 through HAProxy gives `[IN-USE]` across nodes, and a retrieval
//! begun on one node and finished on the other loses and repeats nothing;
//! logs and `Received:` name the real client, not HAProxy.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::gateway::{Gateway, LineClient, expect};
use support::haproxy::Haproxy;
use support::postfix::{Load, smtp_source};
use support::{Sandbox, is_root, peer, run, stderr};

const ADDRESS: &str = "10.77.0.1";

/// A private GlusterFS replica-3 volume and its FUSE mounts; all of it
/// stopped, unmounted and removed when dropped.
struct Gluster {
    netns: String,
    dir: PathBuf,
    volume: String,
    glusterd: Child,
    mounts: Vec<PathBuf>,
}

impl Gluster {
    fn start(dir: &Path, mounts: usize) -> Option<Gluster> {
        let missing = |what: &str| support::missing_peer(&format!("the cluster test needs {what}"));
        if !is_root() {
            return missing("root");
        }
        if !Path::new("/dev/fuse").exists() {
            return missing("FUSE (/dev/fuse)");
        }
        let glusterd = peer("glusterd", &["/usr/sbin/glusterd"])?;
        peer("ip", &["/usr/sbin/ip", "/sbin/ip", "ip"])?;
        let mut random = [0u8; 4];
        support::getrandom(&mut random);
        let tag = u32::from_le_bytes(random);
        let netns = format!("sealpost-{tag:08x}");
        let volume = format!("sealpost{tag:08x}");
        for args in [
            vec!["netns", "add", &netns],
            vec!["-n", &netns, "link", "set", "lo", "up"],
            vec![
                "-n", &netns, "link", "add", "va", "type", "veth", "peer", "name", "vb",
            ],
            vec!["-n", &netns, "addr", "add", "10.77.0.1/24", "dev", "va"],
            vec!["-n", &netns, "link", "set", "va", "up"],
            vec!["-n", &netns, "link", "set", "vb", "up"],
        ] {
            let out = run(Command::new("ip").args(&args));
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        }
        let work = dir.join("glusterd");
        fs::create_dir_all(&work).unwrap();
        let glusterd = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(glusterd)
            .arg("-N")
            .arg("--xlator-option")
            .arg(format!("management.working-directory={}", work.display()))
            .arg("--xlator-option")
            .arg(format!(
                "management.glusterd-sockfile={}",
                dir.join("glusterd.socket").display()
            ))
            .arg("-l")
            .arg(dir.join("glusterd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start glusterd");
        let mut gluster = Gluster {
            netns,
            dir: dir.to_path_buf(),
            volume,
            glusterd,
            mounts: Vec::new(),
        };
        support::wait_until("glusterd answers", || {
            gluster.cli(&["volume", "list"]).status.success()
        });
        let bricks: Vec<String> = (1..=3)
            .map(|i| {
                let brick = dir.join(format!("brick{i}"));
                fs::create_dir_all(&brick).unwrap();
                format!("{ADDRESS}:{}", brick.display())
            })
            .collect();
        let mut create = vec!["volume", "create", &gluster.volume, "replica", "3"];
        create.extend(bricks.iter().map(String::as_str));
        create.push("force");
        let volume = gluster.volume.clone();
        for args in [create, vec!["volume", "start", &volume]] {
            let out = gluster.cli(&args);
            assert!(out.status.success(), "gluster {args:?}: {}", stderr(&out));
        }
        for i in 1..=mounts {
            let mount = dir.join(format!("mount{i}"));
            fs::create_dir_all(&mount).unwrap();
            // The client joins the namespace's network only: its FUSE mount
            // must be in the machine's mount namespace, where Sealpost runs.
            let out = run(Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", gluster.netns))
                .arg("glusterfs")
                .arg(format!("--volfile-server={ADDRESS}"))
                .arg(format!("--volfile-id={}", gluster.volume))
                .arg("-l")
                .arg(dir.join(format!("mount{i}.log")))
                .arg(&mount));
            assert!(out.status.success(), "mount: {}", stderr(&out));
            gluster.mounts.push(mount.clone());
            let target = mount.to_string_lossy().into_owned();
            support::wait_until("the volume is mounted", || {
                fs::read_to_string("/proc/mounts")
                    .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(&target)))
            });
        }
        Some(gluster)
    }

    fn cli(&self, args: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.netns, "gluster"])
            .arg(format!(
                "--glusterd-sock={}",
                self.dir.join("glusterd.socket").display()
            ))
            .arg("--mode=script")
            .args(args))
    }
}

impl Drop for Gluster {
    fn drop(&mut self) {
        for mount in &self.mounts {
            let _ = run(Command::new("umount").arg("-l").arg(mount));
        }
        let _ = self.cli(&["volume", "stop", &self.volume, "force"]);
        // The brick and self-heal daemons glusterd started, by their pid files.
        for dir in [
            format!("/var/run/gluster/vols/{}", self.volume),
            format!("/var/run/gluster/shd/{}", self.volume),
        ] {
            for pid in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let pid = fs::read_to_string(pid.path()).unwrap_or_default();
                support::terminate(pid.trim().parse().ok());
            }
            let _ = fs::remove_dir_all(&dir);
        }
        let _ = self.glusterd.kill();
        let _ = self.glusterd.wait();
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
    }
}

/// A node: its own configuration, its data directory on its own mount, and
/// its two listening sockets, bound here and handed to each start of the
/// gateway (so that a restarted node is where HAProxy looks for it, and no
/// other process can take its ports meanwhile).
struct Node {
    sb: Sandbox,
    smtp: std::net::TcpListener,
    pop3s: std::net::TcpListener,
}

impl Node {
    fn start(&self) -> Gateway {
        Gateway::start_handing(&self.sb, &[&self.smtp, &self.pop3s])
    }

    fn port(listener: &std::net::TcpListener) -> u16 {
        listener.local_addr().unwrap().port()
    }
}

fn node(name: &str, mount: &Path) -> Node {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (smtp_socket, pop3s_socket) = (bind(), bind());
    let (smtp, pop3s) = (Node::port(&smtp_socket), Node::port(&pop3s_socket));
    let sb = Sandbox::for_gateway(
        &format!("gluster-{name}"),
        json!({
            "node": name,
            "data_dir": mount.join("data").to_str().unwrap(),
            "haproxy_trusted_networks": ["127.0.0.1/32"],
            "smtp": { "require_tls": false, "listen": [format!("127.0.0.1:{smtp}")], "listen_tls": [] },
            "pop3": { "listen": [], "listen_tls": [format!("127.0.0.1:{pop3s}")] },
            "smtp_proxy": { "listen": [], "listen_tls": [] },
            "limits": { "tls_handshake_timeout_secs": 5, "max_connections": 512, "max_connections_per_ip": 256 },
        }),
    );
    Node {
        sb,
        smtp: smtp_socket,
        pop3s: pop3s_socket,
    }
}

/// One message through HAProxy on a fresh connection; whether it got 250.
/// Any failure (a node killed mid-session, say) is a message not
/// acknowledged, as a sender sees it.
fn send_through(front: SocketAddr, to: &str, subject: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let tcp = TcpStream::connect(front)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(tcp.try_clone()?);
        let mut writer = tcp;
        let mut reply = || -> std::io::Result<String> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(all);
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(all);
                }
            }
        };
        let mut ok = reply()?.starts_with("220");
        for command in [
            "EHLO cluster.example\r\n".to_string(),
            "MAIL FROM:<j@example.org>\r\n".into(),
            format!("RCPT TO:<{to}>\r\n"),
            "DATA\r\n".into(),
            format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n"),
        ] {
            if !ok {
                return Ok(false);
            }
            writer.write_all(command.as_bytes())?;
            let answer = reply()?;
            ok = answer.starts_with('2') || answer.starts_with("354");
        }
        let _ = writer.write_all(b"QUIT\r\n");
        Ok(ok)
    };
    attempt().unwrap_or(false)
}

/// Subjects of the stored messages, counted.
fn stored_subjects(sb: &Sandbox, id: &str, password: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, body, _) in sb.export(id, password) {
        let text = String::from_utf8_lossy(&body).into_owned();
        if let Some(subject) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
            *counts.entry(subject.to_owned()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn a_glusterfs_cluster_behind_haproxy_keeps_every_guarantee() {
    let base = Sandbox::new("gluster-base", json!({}));
    let Some(gluster) = Gluster::start(&base.dir, 2) else {
        return;
    };
    let (na, nb) = (node("a", &gluster.mounts[0]), node("b", &gluster.mounts[1]));
    let (a_smtp, a_pop3) = (Node::port(&na.smtp), Node::port(&na.pop3s));
    let (b_smtp, b_pop3) = (Node::port(&nb.smtp), Node::port(&nb.pop3s));
    let a = &na.sb;
    let (id, password) = a.create_mailbox("Journal");
    let to = format!("{id}@localhost");
    let mut ga = na.start();
    let gb = nb.start();
    // A GlusterFS mount is FUSE, whose syncfs does not reach the bricks:
    // every file is flushed on its own (fdatasync and a directory fsync),
    // and that is the flush the kill -9 below exercises.
    for gw in [&ga, &gb] {
        gw.wait_for_log(
            "are made durable file by file (a network or FUSE file system",
            Duration::from_secs(5),
        );
    }
    let cert = gluster.mounts[0].join("data/tls/cert.pem");

    let server = |name: &str, port: u16| {
        format!(
            "  server {name} 127.0.0.1:{port} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 2\n"
        )
    };
    let config = |fronts: &[u16]| {
        format!(
            "frontend smtp\n  bind 127.0.0.1:{}\n  default_backend smtp\n\
             backend smtp\n  balance roundrobin\n  retries 3\n  option redispatch\n{}{}\
             frontend pop3s\n  bind 127.0.0.1:{}\n  default_backend pop3s\n\
             backend pop3s\n  balance roundrobin\n{}{}",
            fronts[0],
            server("a", a_smtp),
            server("b", b_smtp),
            fronts[1],
            server("a", a_pop3),
            server("b", b_pop3),
        )
    };
    let Some((_haproxy, fronts)) = Haproxy::start_on(&base.dir, 2, config) else {
        return;
    };
    let smtp_front: SocketAddr = ([127, 0, 0, 1], fronts[0]).into();
    let pop3_front: SocketAddr = ([127, 0, 0, 1], fronts[1]).into();

    // Journal mail while node a is killed and restarted.
    let mut acknowledged = Vec::new();
    for i in 0..90 {
        if i == 30 {
            ga.signal(libc::SIGKILL);
            ga.wait(Duration::from_secs(30));
        }
        if i == 60 {
            ga = na.start();
        }
        let subject = format!("m-{i}");
        if send_through(smtp_front, &to, &subject) {
            acknowledged.push(subject);
        }
    }
    // Mail goes on until HAProxy's checks have brought node a back and it
    // has taken a message (bounded: a node that never returns fails below).
    for i in 90..400 {
        if ga.log().contains("result=stored") {
            break;
        }
        let subject = format!("m-{i}");
        if send_through(smtp_front, &to, &subject) {
            acknowledged.push(subject);
        }
    }
    let first_90 = (0..90)
        .filter(|i| acknowledged.contains(&format!("m-{i}")))
        .count();
    assert!(first_90 >= 80, "{first_90} of the first 90 acknowledged");
    let while_down = (30..60)
        .filter(|i| acknowledged.contains(&format!("m-{i}")))
        .count();
    assert!(while_down >= 25, "node b took over: {while_down} of 30");
    assert!(
        ga.log().contains("result=stored"),
        "the restarted node a takes mail again:\n{}",
        ga.log()
    );
    let stored = stored_subjects(a, &id, &password);
    for subject in &acknowledged {
        assert_eq!(stored.get(subject), Some(&1), "{subject}: {stored:?}");
    }
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    let count = stored.len();

    // The real client in the logs and in Received:, not HAProxy.
    let mut c = LineClient::plain_from(smtp_front, Some("127.0.0.2"));
    let client = c.local_addr();
    expect(&c.smtp_reply(), "220 ");
    expect(&c.smtp("EHLO real-client.example"), "250");
    let reply = c.smtp_send(
        "j@example.org",
        &to,
        b"Subject: from 127.0.0.2\r\n\r\nbody\r\n",
    );
    expect(&reply, "250");
    c.smtp("QUIT");
    let needle = format!("PROXY header: client {client}");
    support::wait_until("a node logs the real client", || {
        ga.log().contains(&needle) || gb.log().contains(&needle)
    });
    let from_real = a
        .export(&id, &password)
        .into_iter()
        .find(|(_, body, _)| String::from_utf8_lossy(body).contains("Subject: from 127.0.0.2"))
        .expect("the message is stored");
    let received = String::from_utf8_lossy(&from_real.1)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(received.contains("127.0.0.2"), "{received}");
    assert_eq!(from_real.2["client_ip"], "127.0.0.2");
    let count = count + 1;

    // POP3 through HAProxy: round robin puts two logins on two nodes.
    let login = || {
        let mut c = LineClient::implicit_tls(pop3_front, &cert);
        c.read_line();
        c.pop3(&format!("USER {id}"));
        let answer = c.pop3(&format!("PASS {password}"));
        (c, answer)
    };
    let (mut first, answer) = login();
    assert!(answer.starts_with("+OK"), "{answer}");
    let (_, busy) = login();
    assert!(busy.starts_with("-ERR [IN-USE]"), "{busy}");
    // Half the mail retrieved and deleted on one node...
    let half = count / 2;
    let mut retrieved = Vec::new();
    for n in 1..=half {
        let (status, body) = first.pop3_multi(&format!("RETR {n}"));
        assert!(status.starts_with("+OK"), "{status}");
        retrieved.push(body);
        assert!(first.pop3(&format!("DELE {n}")).starts_with("+OK"));
    }
    assert!(first.pop3("QUIT").starts_with("+OK"));
    // ...and the rest on whichever node the next login reaches.
    let (mut second, answer) = login();
    assert!(
        answer.starts_with(&format!("+OK Logged in: {} messages", count - half)),
        "{answer}"
    );
    for n in 1..=count - half {
        let (status, body) = second.pop3_multi(&format!("RETR {n}"));
        assert!(status.starts_with("+OK"), "{status}");
        retrieved.push(body);
        assert!(second.pop3(&format!("DELE {n}")).starts_with("+OK"));
    }
    assert!(second.pop3("QUIT").starts_with("+OK"));
    assert_eq!(retrieved.len(), count);
    retrieved.sort();
    retrieved.dedup();
    assert_eq!(retrieved.len(), count, "nothing retrieved twice");
    let messages = gluster.mounts[0]
        .join("data/mailboxes")
        .join(&id)
        .join("messages");
    assert_eq!(fs::read_dir(messages).unwrap().count(), 0, "nothing left");
    drop(ga);
    drop(gb);
}

/// Ingest through HAProxy into two nodes on the GlusterFS volume, next to
/// one node on the local disk, with Postfix's `smtp-source` (10 KiB, one
/// message per connection). A few messages in the suite; `scripts/bench`
/// runs it at full size (`SEALPOST_BENCH=full`) and prints `BENCH` lines.
#[test]
fn cluster_throughput_next_to_a_single_node() {
    let Some(source) = peer("smtp-source", &["/usr/sbin/smtp-source"]) else {
        return;
    };
    let full = std::env::var("SEALPOST_BENCH").as_deref() == Ok("full");
    let (count, sessions) = if full { (2000, 32) } else { (10, 2) };
    let base = Sandbox::new("gluster-bench", json!({}));
    let Some(gluster) = Gluster::start(&base.dir, 2) else {
        return;
    };
    let (na, nb) = (
        node("bench-a", &gluster.mounts[0]),
        node("bench-b", &gluster.mounts[1]),
    );
    let (a_smtp, b_smtp) = (Node::port(&na.smtp), Node::port(&nb.smtp));
    let (id, _) = na.sb.create_mailbox("Bench");
    let _ga = na.start();
    let _gb = nb.start();
    let config = |ports: &[u16]| {
        format!(
            "frontend smtp\n  bind 127.0.0.1:{}\n  default_backend smtp\n\
             backend smtp\n  balance roundrobin\n\
             \x20 server a 127.0.0.1:{a_smtp} send-proxy-v2\n  server b 127.0.0.1:{b_smtp} send-proxy-v2\n",
            ports[0]
        )
    };
    let Some((_haproxy, ports)) = Haproxy::start_on(&base.dir, 1, config) else {
        return;
    };
    let front: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let single = Sandbox::for_gateway(
        "gluster-bench-single",
        json!({
            "smtp": { "require_tls": false },
            "limits": { "max_connections": 512, "max_connections_per_ip": 256 },
        }),
    );
    let (single_id, _) = single.create_mailbox("Bench");
    let gs = Gateway::start(&single);

    let load = Load {
        size: 10 << 10,
        count,
        sessions,
    };
    let rate = |port: u16, to: &str| count as f64 / smtp_source(&source, port, &load, to, false);
    let cluster = rate(front.port(), &format!("{id}@localhost"));
    let stored = fs::read_dir(
        gluster.mounts[1]
            .join("data/mailboxes")
            .join(&id)
            .join("messages"),
    )
    .unwrap()
    .count();
    assert_eq!(stored, count, "every message is on the shared volume");
    let local = rate(
        gs.addr("smtp.listen[0]").port(),
        &format!("{single_id}@localhost"),
    );
    assert_eq!(single.message_files(&single_id).len(), count);
    let load = load.label(false);
    for (target, unit, value) in [
        (
            "2 nodes on GlusterFS replica 3, via HAProxy",
            "msg/s",
            cluster,
        ),
        ("1 node on the local disk", "msg/s", local),
        ("cluster / single node", "ratio", cluster / local),
    ] {
        println!(
            "BENCH {}",
            json!({ "group": "cluster ingest", "load": load, "target": target, "unit": unit,
                    "median": value, "min": value, "max": value })
        );
    }
}
