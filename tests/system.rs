//! The patent's claims on the appliance itself: three mail boxes and the
//! storage box booted under QEMU from the images `cargo xtask image`
//! builds, BIND 9 as the DNS server, and a mail user's client (Python's
//! smtplib and poplib) on the same LAN, all inside a network namespace the
//! test creates and removes.
//!
//! Needs root, and Debian's qemu-system-x86, bind9, bind9-dnsutils,
//! iproute2 and python3; fails (does not skip) without them. Takes a few
//! minutes: the images are built first (the static mailfort in release).
//! `MAILFORT_KEEP_LAYOUT=1` leaves the layout up after the test for a look
//! (`cargo xtask qemu status --name mailfort-system`, then `down`);
//! `MAILFORT_STATIC_BINARY=PATH` puts that static mailfort into the images
//! instead of building one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xtask::board::Role;
use xtask::console::Session;
use xtask::layout::{self, Layout, StartOptions, UpOptions, DOMAIN};
use xtask::{image, wait};

const LAYOUT: &str = "mailfort-system";
const USER: &str = "alice@example.test";
const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "console-admin-secret";
const SENDER: &str = "bob@elsewhere.test";

/// The announcer acts within seconds of a change; BIND answers at once.
const DNS_TIMEOUT: Duration = Duration::from_secs(60);
/// A box booting again (one VM, the others running).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The mail boxes' return after the storage box's: its boot, the NFS
/// grace period and the clients' retry back-off (up to 15 s).
const STORE_RETURN_TIMEOUT: Duration = Duration::from_secs(180);
/// A console command (argon2 hashing under TCG is slow).
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(120);
/// One client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// Takes the layout down when the test ends, passed or not.
struct Fixture {
    layout: Layout,
    started: Instant,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for b in layout::boxes() {
                eprintln!("--- {} console (last lines)\n{}", b.name, self.layout.console_tail(&b.name, 60));
            }
        }
        if std::env::var_os("MAILFORT_KEEP_LAYOUT").is_some() {
            eprintln!("layout left up: cargo xtask qemu down --name {LAYOUT}");
            return;
        }
        if let Err(e) = self.layout.down() {
            eprintln!("cannot take the layout down: {e:#}");
        }
    }
}

impl Fixture {
    fn step(&self, claim: &str) {
        eprintln!("[{:>6.1} s] {claim}", self.started.elapsed().as_secs_f64());
    }

    fn ip(&self, name: &str) -> Ipv4Addr {
        layout::spec(name).expect("box").ip
    }

    fn client(&self, args: &[&str]) -> String {
        let script = testsupport::python::py_dir().join("mailclient.py");
        let mut cmd = self.layout.command("python3");
        cmd.arg(&script).args(args);
        let out = wait::output(&mut cmd, CLIENT_TIMEOUT).expect("run the mail client");
        assert!(out.status.success(), "mailclient {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Sends one message to a box; returns the server's reply ("250", or
    /// the code and text).
    fn send(&self, to_box: &str, token: &str) -> String {
        self.client(&["send", &self.ip(to_box).to_string(), SENDER, USER, token])
    }

    /// Sends and insists on 250.
    fn deliver(&self, to_box: &str, token: &str, accepted: &mut BTreeSet<String>) {
        let reply = self.send(to_box, token);
        assert_eq!(reply, "250", "delivery of {token} to {to_box}");
        accepted.insert(token.to_string());
    }

    /// The subjects in the user's maildrop, read over POP3 from a box.
    fn mailbox(&self, from_box: &str) -> BTreeSet<String> {
        self.client(&["pop3", &self.ip(from_box).to_string(), USER, PASSWORD]).lines().map(str::to_string).collect()
    }

    /// The MX hosts, preferred first, as BIND answers.
    fn mx_hosts(&self) -> Vec<String> {
        self.layout.mx().unwrap_or_default().into_iter().map(|(_, h)| h).collect()
    }

    fn wait_mx(&self, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|n| format!("{n}.{DOMAIN}")).collect();
        wait::until(&format!("MX = {want:?}"), DNS_TIMEOUT, Duration::from_millis(250), || (self.mx_hosts() == want).then_some(()))
            .unwrap_or_else(|e| panic!("{e:#}; BIND has {:?}", self.mx_hosts()));
    }

    fn wait_client_host(&self, boxes: &[&str]) {
        let want: Vec<Ipv4Addr> = boxes.iter().map(|b| self.ip(b)).collect();
        let name = format!("mail.{DOMAIN}");
        wait::until(&format!("{name} = {want:?}"), DNS_TIMEOUT, Duration::from_millis(250), || (self.layout.a(&name).ok()? == want).then_some(()))
            .unwrap_or_else(|e| panic!("{e:#}; BIND has {:?}", self.layout.a(&name)));
    }

    /// The preferred MX host's box name, resolved through BIND.
    fn preferred_mx_box(&self) -> String {
        let host = self.mx_hosts().into_iter().next().expect("an MX record");
        let addrs = self.layout.a(&host).expect("A of the MX host");
        let b = layout::boxes().into_iter().find(|b| addrs.contains(&b.ip)).unwrap_or_else(|| panic!("{host} -> {addrs:?} is no box"));
        b.name
    }

    fn greeting(&self, b: &str) -> String {
        self.layout.smtp_greeting(b).expect("probe").unwrap_or_default()
    }

    fn wait_greeting(&self, b: &str, code: &str, timeout: Duration) {
        wait::until(&format!("{b} to greet with {code}"), timeout, Duration::from_millis(500), || self.greeting(b).starts_with(code).then_some(()))
            .unwrap_or_else(|e| panic!("{e:#}; it says {:?}", self.greeting(b)));
    }

    fn console(&self, b: &str) -> Session {
        let mut s = Session::connect(&self.layout.console_socket(b), Duration::from_secs(10)).expect("console");
        s.login(b, ADMIN_PASSWORD, CONSOLE_TIMEOUT).unwrap_or_else(|e| panic!("login on {b}'s console: {e:#}"));
        s
    }
}

#[test]
fn patent_claims_on_the_appliance() {
    let started = Instant::now();
    let prebuilt = std::env::var_os("MAILFORT_STATIC_BINARY").map(PathBuf::from);
    image::build(&image::BuildOptions { board: layout::BOARD.into(), roles: Role::ALL.to_vec(), mailfort: prebuilt }).expect("build the images");
    let l = Layout::new(LAYOUT).expect("layout");
    if l.is_up() {
        l.down().expect("take down a layout left from an earlier run");
    }
    let f = Fixture { layout: l, started };
    let mut accepted = BTreeSet::new();

    f.step("cluster up: the storage box and three mail boxes serve");
    f.layout.up(&UpOptions { build: false, mailfort: None, wait: Some(layout::CLUSTER_UP_TIMEOUT), boxes: None }).expect("layout up");

    f.step("claim 5: BIND lists the three mail boxes as MX, node1 preferred, and as the client host");
    f.wait_mx(&["node1", "node2", "node3"]);
    f.wait_client_host(&["node1", "node2", "node3"]);

    f.step("claims 4, 9: an account made on node1's serial console");
    let mut con = f.console("node1");
    con.send_line(&format!("user add {USER}")).expect("console");
    for _ in 0..2 {
        con.expect_any(&["New password: ", "Again: "], CONSOLE_TIMEOUT).expect("password prompt");
        con.send_line(PASSWORD).expect("console");
    }
    let (k, text) = con.expect_any(&[&format!("added {USER}"), "error: "], CONSOLE_TIMEOUT).expect("user add");
    assert_eq!(k, 0, "user add failed: {text}{}", con.transcript());
    con.expect("node1> ", CONSOLE_TIMEOUT).expect("the prompt after user add");
    let shown = con.run("node1", "node show", CONSOLE_TIMEOUT).expect("node show");
    assert!(shown.contains("10.0.0.11/24") && shown.contains("rank"), "node show on node1:\n{shown}");
    drop(con);

    f.step("the admin page of node2 takes the admin password set on node1's console and shows the live set");
    let dash = f.client(&["admin", &f.ip("node2").to_string(), ADMIN_PASSWORD]);
    for n in ["node1", "node2", "node3"] {
        assert!(dash.lines().any(|l| l == format!("{n} live")), "node2's dashboard: {dash:?}");
    }
    let answer = f.client(&["admin-restart", &f.ip("node3").to_string(), ADMIN_PASSWORD, "serve"]);
    assert!(answer.starts_with("200") && answer.contains("restarting serve"), "restart from node3's admin page: {answer}");
    let mut con = f.console("node3");
    let restarted = wait::until("node3's serve restarted", BOOT_TIMEOUT, Duration::from_secs(1), || {
        let st = con.run("node3", "status", CONSOLE_TIMEOUT).ok()?;
        st.lines().any(|l| l.contains("service   serve: running") && l.contains("1 restart(s)")).then_some(())
    });
    restarted.unwrap_or_else(|e| panic!("{e:#}\n{}", con.transcript()));
    drop(con);
    f.layout.wait_serving("node3", BOOT_TIMEOUT).expect("node3 serving after the restart");
    // Last: a wrong password delays the next login from this address.
    assert_eq!(f.client(&["admin", &f.ip("node3").to_string(), "not-the-password"]), "refused");

    f.step("claims 1-3: mail to the preferred MX (node1) is stored, and read over POP3 from node2 with the same password");
    assert_eq!(f.preferred_mx_box(), "node1");
    f.deliver("node1", "before-failure", &mut accepted);
    let seen = f.mailbox("node2");
    assert!(seen.contains("before-failure"), "node2 shows {seen:?}");
    f.step("a box checks the sender of inbound mail: the message carries SPF, DKIM and DMARC verdicts");
    let results = f.client(&["auth-results", &f.ip("node2").to_string(), USER, PASSWORD, "before-failure"]);
    assert!(results.contains("; spf=") && results.contains("; dkim=") && results.contains("; dmarc="), "Authentication-Results of a message through node1's port 25: {results:?}");

    f.step("IMAP on node2: a message that came in through node1 is read, flagged and moved to Archive");
    f.deliver("node1", "filed-over-imap", &mut BTreeSet::new());
    let filed = f.client(&["imap-file", &f.ip("node2").to_string(), USER, PASSWORD, "filed-over-imap", "Archive"]);
    let mut filed_words = filed.split_whitespace();
    let archive_uid = filed_words.next().unwrap_or_default().to_string();
    let flags: Vec<&str> = filed_words.collect();
    assert!(archive_uid.parse::<u32>().is_ok() && flags.contains(&"\\Flagged") && flags.contains(&"\\Seen"), "imap-file on node2 answered {filed:?}");

    f.step("claim 5: node1 fails (its VM killed); BIND drops it from the MX and the client host");
    f.layout.kill("node1", libc::SIGKILL).expect("kill node1");
    f.wait_mx(&["node2", "node3"]);
    f.wait_client_host(&["node2", "node3"]);

    f.step("claim 5: mail to the MX now lands through node2");
    assert_eq!(f.preferred_mx_box(), "node2");
    f.deliver("node2", "during-outage", &mut accepted);

    f.step("paragraphs 0050, 0057: mail from before the failure is readable through node2 and node3");
    for b in ["node2", "node3"] {
        let seen = f.mailbox(b);
        assert!(seen.contains("before-failure") && seen.contains("during-outage"), "{b} shows {seen:?}");
    }

    f.step("paragraph 0058: node1 boots again, shows the outage's mail, and DNS lists it again");
    f.layout.start("node1", &StartOptions::default()).expect("start node1");
    f.layout.wait_serving("node1", BOOT_TIMEOUT).expect("node1 serving again");
    let seen = f.mailbox("node1");
    assert!(seen.contains("during-outage"), "node1 shows {seen:?}");
    f.wait_mx(&["node1", "node2", "node3"]);
    f.wait_client_host(&["node1", "node2", "node3"]);

    f.step("claims 6, 10: the storage box restarts with one disk missing; the boxes serve, the storage box reports degraded");
    f.layout.powerdown("storage", Duration::from_secs(30)).expect("storage power-off");
    f.layout.start("storage", &StartOptions { without: vec!["store1".into()] }).expect("storage without store1");
    f.layout.wait_serving("storage", BOOT_TIMEOUT).expect("storage serving degraded");
    for b in ["node1", "node2", "node3"] {
        f.wait_greeting(b, "220", STORE_RETURN_TIMEOUT);
    }
    f.deliver("node1", "while-degraded", &mut accepted);
    let mut con = f.console("storage");
    let status = con.run("storage", "status", CONSOLE_TIMEOUT).expect("storage status");
    assert!(status.contains("DEGRADED"), "storage status does not say DEGRADED:\n{status}");
    drop(con);

    f.step("the store stops (storage VM killed): every mail box answers 421 and takes no mail");
    f.layout.kill("storage", libc::SIGKILL).expect("kill storage");
    for b in ["node1", "node2", "node3"] {
        f.wait_greeting(b, "421", DNS_TIMEOUT);
    }
    let reply = f.send("node2", "while-store-down");
    assert!(reply.starts_with('4'), "node2 answered {reply:?} with the store down");

    f.step("the store returns (both disks): the mail boxes resume");
    f.layout.start("storage", &StartOptions::default()).expect("start storage");
    f.layout.wait_serving("storage", BOOT_TIMEOUT).expect("storage serving");
    for b in ["node1", "node2", "node3"] {
        f.wait_greeting(b, "220", STORE_RETURN_TIMEOUT);
    }
    f.deliver("node3", "after-store-return", &mut accepted);

    f.step("no message that ever got 250 is missing, through any box");
    for b in ["node1", "node2", "node3"] {
        let seen = f.mailbox(b);
        let missing: Vec<&String> = accepted.difference(&seen).collect();
        assert!(missing.is_empty(), "{b} misses {missing:?} (it shows {seen:?})");
    }
    f.step("power off node2 from its admin page: it stops cleanly and leaves DNS");
    let answer = f.client(&["admin-poweroff", &f.ip("node2").to_string(), ADMIN_PASSWORD]);
    assert!(answer.starts_with("200") && answer.contains("powering off"), "power-off from node2's admin page: {answer}");
    wait::until("node2's QEMU to exit", BOOT_TIMEOUT, Duration::from_millis(500), || f.layout.pid("node2").is_none().then_some(()))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", f.layout.console_tail("node2", 30)));
    f.wait_mx(&["node1", "node3"]);

    f.step("with node2 gone, node3 shows the message node2 filed over IMAP: the same UID in Archive, the same flags");
    let shown = f.client(&["imap-show", &f.ip("node3").to_string(), USER, PASSWORD, "filed-over-imap", "Archive"]);
    assert_eq!(shown, filed, "Archive through node3 after node2 stopped");

    f.step("done");
}
