//! `payments-server limits reset`: a support desk gives a user its quota back on every replica.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{ALICE, BOB, Isolated, Server, TempFile, payment, unique};

/// Two payments an hour: used up in two requests, and not back by itself during a test.
const TWO_AN_HOUR: &str = "[[policy]]\nname = \"payments\"\nscope = \"user\"\n\
    algorithm = \"sliding-window\"\nlimit = 2\nwindow = \"1h\"\nendpoint = \"POST /api/v1/payments\"\n";

#[test]
fn a_reset_gives_a_user_its_quota_back_on_every_replica() {
    let Some(services) = Isolated::new("a_reset_gives_a_user_its_quota_back") else {
        return;
    };
    let servers = [
        Server::start(&services.options().toml(TWO_AN_HOUR)),
        Server::start(&services.options().toml(TWO_AN_HOUR)),
    ];
    let pay = |server: &Server, key: &str| {
        server
            .pay(key, &unique("order"), &payment("1.00", "card"))
            .status
    };
    assert_eq!(
        (pay(&servers[0], ALICE), pay(&servers[1], ALICE)),
        (201, 201)
    );
    assert_eq!(
        (pay(&servers[0], ALICE), pay(&servers[1], ALICE)),
        (429, 429)
    );
    assert_eq!(pay(&servers[0], BOB), 201);

    let config = TempFile(std::env::temp_dir().join(format!("{}.toml", unique("reset"))));
    std::fs::write(&config.0, TWO_AN_HOUR).expect("the configuration");
    let output = Command::new(env!("CARGO_BIN_EXE_payments-server"))
        .args(["limits", "reset", "--user", "alice"])
        .env("REDIS_URL", &services.redis_url)
        .env("REDIS_KEY_PREFIX", &services.prefix)
        .env("TOLLGATE_CONFIG", &config.0)
        .env_remove("DATABASE_URL")
        .output()
        .expect("the command runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("reset user alice under payments"),
        "{stdout}"
    );

    // Each replica answers its remembered denial for a second at most: then alice pays again,
    // twice in all, on both. Bob's count was not touched.
    let reset_at = Instant::now();
    for server in &servers {
        while pay(server, ALICE) != 201 {
            assert!(
                reset_at.elapsed() < Duration::from_secs(3),
                "never admitted again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "both replicas admitted alice again {:?} after the reset",
        reset_at.elapsed()
    );
    assert_eq!(pay(&servers[0], ALICE), 429, "two in all");
    assert_eq!(pay(&servers[1], BOB), 201);
    assert_eq!(pay(&servers[0], BOB), 429);
}
