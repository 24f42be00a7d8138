//! `make demo`'s scenario, as the test suite runs it: the `sluice-demo`
//! binary from the checkout's root, its JSON summary read back.

mod support;

use anyhow::{Context, Result};
use serde_json::Value;
use sluice_local::launcher::build_dir;
use std::process::Command;
use support::workspace_root;

#[test]
fn the_demo_promotes_the_good_pushes_and_rolls_back_the_two_bad_ones() -> Result<()> {
    let out = Command::new(build_dir().join("sluice-demo"))
        .args(["run", "--json"])
        .current_dir(workspace_root())
        .output()
        .context("running sluice-demo (cargo build --workspace --bins builds it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("no JSON summary:\n{stdout}"))?;
    let pushes = summary["pushes"].as_array().context("pushes")?;
    assert_eq!(pushes.len(), 4, "{summary}");

    // 1: promoted through its shifts, and it served real traffic without an error.
    assert_eq!(pushes[0]["phase"]["phase"], "promoted");
    let traffic = &pushes[0]["traffic"]["by_version"];
    assert!(traffic["2"]["ok"].as_u64() > Some(0), "{traffic}");
    assert_eq!(traffic["2"]["failed"], 0, "{traffic}");

    // 2: the PreTraffic gate stopped it before any caller reached it.
    assert_eq!(pushes[1]["phase"]["phase"], "rolled_back");
    let reason = pushes[1]["phase"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("PreTraffic gate failed before 10%"),
        "{reason}"
    );
    assert_eq!(pushes[1]["shifted"], false);
    let versions: Vec<&String> = pushes[1]["traffic"]["by_version"]
        .as_object()
        .context("traffic")?
        .keys()
        .collect();
    assert_eq!(versions, ["2"], "only the promoted version answered");

    // 3: analysis of real traffic after the first shift rolled it back, over
    // published (scaled) minutes, its measured values next to the thresholds.
    assert_eq!(pushes[2]["phase"]["phase"], "rolled_back");
    let reason = pushes[2]["phase"]["reason"].as_str().unwrap_or_default();
    let measured = regex::Regex::new(
        r"^analysis failed at 10%: error rate [0-9.]+% \([0-9]+ of [0-9]+ calls, periods? [0-9:-]+\) > 5%; old version ",
    )?;
    assert!(measured.is_match(reason), "{reason}");
    let failed_on_new = pushes[2]["traffic"]["by_version"]["4"]["failed"]
        .as_u64()
        .unwrap_or_default();
    assert!(failed_on_new > 0, "{}", pushes[2]["traffic"]);
    assert_eq!(pushes[2]["traffic"]["by_version"]["2"]["failed"], 0);

    // Each push's commit statuses, as the demo's stand-in for GitHub took
    // them: the build passed every time; the rollout's say its verdict.
    for (push, live) in [(0, "success"), (1, "failure"), (2, "failure")] {
        let statuses = &pushes[push]["statuses"];
        assert_eq!(
            statuses["sluice/demo/build"]["state"], "success",
            "{statuses}"
        );
        assert_eq!(statuses["sluice/demo/live"]["state"], live, "{statuses}");
        let deploy = &statuses["sluice/demo/live/deploy-live"];
        assert_eq!(deploy["state"], live, "{statuses}");
        let says = if live == "success" {
            "promoted version "
        } else {
            "rolled back: "
        };
        assert!(
            deploy["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(says)),
            "{statuses}"
        );
    }

    // 4: a release group, the greeter and its worker, promoted together:
    // both aliases on the push's build, its statuses those of its pipeline.
    assert_eq!(pushes[3]["phase"]["phase"], "promoted", "{}", pushes[3]);
    assert_eq!(
        pushes[3]["members"],
        serde_json::json!(["greeter:live on v5", "greeter-worker:live on v2"]),
        "{}",
        pushes[3]
    );
    let statuses = &pushes[3]["statuses"];
    assert_eq!(
        statuses["sluice/demo-group/live/deploy-live"]["state"], "success",
        "{statuses}"
    );

    // Its verdict lines are what an operator reads.
    for verdict in [
        "PROMOTED",
        "ROLLED BACK by a gate",
        "ROLLED BACK by analysis",
        "PROMOTED as one release group: greeter:live on v5, greeter-worker:live on v2",
    ] {
        assert!(stdout.contains(verdict), "{verdict}:\n{stdout}");
    }
    Ok(())
}
