//! The offline commands' `--output json` through the built binary (no sandbox): the region
//! comes from `--region`, `AWS_REGION` or the profile as `init` resolves it — no longer a
//! fixed us-east-1 — and the document carries its schema and camelCase quantity fields.

use std::process::Command;

use serde_json::Value;

/// `karpctl instance-types -o json` with only `env` set (no real ~/.aws can be read).
fn instance_types(env: &[(&str, &str)], args: &[&str]) -> Value {
    let home = std::env::temp_dir().join(format!("karpctl-json-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(["instance-types", "-o", "json"])
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", home.join("no-such-config"))
        .envs(env.iter().copied())
        .output()
        .expect("running karpctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn zones(doc: &Value) -> Vec<String> {
    let mut zones: Vec<String> = doc["instanceTypes"][0]["offerings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["zone"].as_str().unwrap().to_string())
        .collect();
    zones.sort();
    zones.dedup();
    zones
}

#[test]
fn the_region_comes_from_the_flag_the_environment_or_the_profile() {
    let doc = instance_types(&[], &[]);
    assert_eq!(doc["schema"], "karpctl.instance-types/v1");
    assert_eq!(doc["region"], "us-east-1", "nothing names a region");

    let doc = instance_types(&[("AWS_REGION", "eu-west-1")], &[]);
    assert_eq!(doc["region"], "eu-west-1");
    assert_eq!(zones(&doc), ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);

    let config = std::env::temp_dir().join(format!("karpctl-json-config-{}", std::process::id()));
    std::fs::write(
        &config,
        "[default]\nregion = ap-south-1\n[profile team]\nregion = ca-central-1\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let doc = instance_types(&[("AWS_CONFIG_FILE", config)], &[]);
    assert_eq!(doc["region"], "ap-south-1", "the default profile");
    let doc = instance_types(&[("AWS_CONFIG_FILE", config), ("AWS_PROFILE", "team")], &[]);
    assert_eq!(doc["region"], "ca-central-1", "AWS_PROFILE");
    let doc = instance_types(&[("AWS_CONFIG_FILE", config)], &["--profile", "team"]);
    assert_eq!(doc["region"], "ca-central-1", "--profile");
    let doc = instance_types(
        &[("AWS_CONFIG_FILE", config), ("AWS_REGION", "eu-west-1")],
        &["--region", "us-west-2"],
    );
    assert_eq!(doc["region"], "us-west-2", "the flag wins");
}

#[test]
fn instance_type_amounts_are_quantity_strings() {
    let doc = instance_types(&[], &[]);
    let m5 = doc["instanceTypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "m5.large")
        .expect("m5.large in the catalogue");
    assert_eq!(m5["capacity"]["cpu"], "2");
    assert!(m5["allocatable"]["cpu"].as_str().unwrap().ends_with('m'));
    assert!(m5["allocatable"]["memory"].is_string() && m5["capacity"]["memory"].is_string());
    assert!(m5.get("max_pods").is_none() && m5["allocatable"]["pods"].is_u64());
}
