//! The admin page in a real browser: headless Chromium driven through
//! Selenium (tests/py/web_ui.py) against two `mailfort serve` nodes on one
//! store. Screenshots are kept in `target/test-artifacts/`.

use testsupport::prelude::*;

use std::path::PathBuf;

const ADMIN_PASSWORD: &str = "admin-page-secret";
/// Short, so that the test sees a session expire.
const SESSION_IDLE_SECS: u64 = 6;

fn artifacts() -> PathBuf {
    // <target>/tmp -> <target>/test-artifacts
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("test-artifacts")
}

#[test]
fn admin_page_in_a_browser() {
    let f = Fixture::new();
    // The admin password, set the way an administrator does on a terminal.
    let o = run(&["console", "--store", f.store_arg()], &format!("admin-passwd\n{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"));
    assert!(text(&o).contains("admin password changed"), "{}", text(&o));
    let cfg = f.dir.path().join("node1.toml");
    std::fs::write(&cfg, format!("rank = 1\n[outbound]\nenabled = false\n[admin]\nsession_idle_secs = {SESSION_IDLE_SECS}\n")).expect("config");
    let node1 = Node::start(&f, "node1", &["--config", cfg.to_str().expect("utf8"), "--admin", "127.0.0.1:0", "--allow-plaintext-auth"]);
    let mut node2 = Node::start(&f, "node2", &["--rank", "2", "--admin", "127.0.0.1:0"]);
    assert_ne!(node1.admin.port(), 9, "node1 has no admin page: {}", node1.log_text());

    let out = artifacts();
    std::fs::create_dir_all(&out).expect("artifacts dir");
    for shot in ["dashboard.png", "users.png", "dashboard-node2-dead.png"] {
        let _ = std::fs::remove_file(out.join(shot));
    }
    let o = testsupport::python::script("web_ui.py")
        .env("ADMIN_URL", format!("https://{}/", node1.admin))
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("POP3_PORT", node1.pop3.port().to_string())
        .env("SMTP_PORT", node1.smtp.port().to_string())
        .env("NODE2_PID", node2.child.id().to_string())
        .env("SESSION_IDLE", SESSION_IDLE_SECS.to_string())
        .env("ARTIFACTS", &out)
        .output()
        .expect("run python3 (with selenium; scripts/test installs it)");
    let t = text(&o);
    let _ = node2.wait_exit(std::time::Duration::from_secs(5));
    assert!(o.status.success() && t.contains("ALL OK"), "browser test failed:\n{t}\n--- node1 log:\n{}", node1.log_text());

    // What the browser did is in the store, where every node reads it.
    let users = text(&run(&["user", "list", "--store", f.store_arg()], ""));
    assert!(users.contains("webuser@example.test") && !users.contains("forged"), "{users}");
    let cluster = std::fs::read_to_string(f.store.join("cluster.toml")).expect("cluster.toml");
    assert!(cluster.contains("max_message_size = 2000000"), "{cluster}");
    for shot in ["dashboard.png", "users.png", "dashboard-node2-dead.png"] {
        let png = std::fs::read(out.join(shot)).unwrap_or_else(|e| panic!("{shot}: {e}"));
        assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{shot} is not a screenshot");
    }
}
