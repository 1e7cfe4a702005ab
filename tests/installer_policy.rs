//! karpctl's own footprint: a principal holding only the policy `karpctl init
//! --print-installer-policy` prints runs init and uninstall against the sandbox, whose AWS
//! endpoint evaluates every call it signs; with one permission less (`events:PutTargets`),
//! init fails at the step that needs it and says which permission is missing; given it back,
//! a re-run converges.

mod support;

use serde_json::Value;
use support::footprint::reset;
use support::{sandbox, text, unique};

/// An IAM user holding `policy` inline, and its access key.
async fn installer(sb: &support::Sandbox, policy: &Value) -> (String, String, String) {
    let iam = aws_sdk_iam::Client::new(&sb.aws().await);
    let user = unique("karpctl-installer");
    iam.create_user().user_name(&user).send().await.unwrap();
    iam.put_user_policy()
        .user_name(&user)
        .policy_name("installer")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    (user, key.access_key_id, key.secret_access_key)
}

async fn set_policy(sb: &support::Sandbox, user: &str, policy: &Value) {
    aws_sdk_iam::Client::new(&sb.aws().await)
        .put_user_policy()
        .user_name(user)
        .policy_name("installer")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
}

/// The policy less one action of one statement.
fn without(policy: &Value, sid: &str, action: &str) -> Value {
    let mut p = policy.clone();
    for s in p["Statement"].as_array_mut().unwrap() {
        if s["Sid"] == sid {
            let actions = s["Action"].as_array_mut().unwrap();
            actions.retain(|a| a != action);
        }
    }
    p
}

#[tokio::test]
async fn the_documented_installer_policy_is_enough_for_init_and_uninstall_and_one_less_is_named() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    reset(sb).await;

    let printed = sb.karpctl_ok(&["init", "--cluster", &cluster, "--print-installer-policy"]);
    let policy: Value = serde_json::from_str(&printed).expect("the policy is one JSON document");
    let (user, key, secret) = installer(sb, &policy).await;

    // One permission less: the rules cannot target the queue.
    set_policy(
        sb,
        &user,
        &without(&policy, "InterruptionRules", "events:PutTargets"),
    )
    .await;
    let out = sb.karpctl_as(&key, &secret, &["init", "--cluster", &cluster, "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("eventbridge-rule Karpenter-sandbox-")
            && stderr.contains("events:PutTargets")
            && stderr.contains(&format!("user/{user}")),
        "{stderr}"
    );

    // The whole policy: init converges from there, and uninstall takes it all back.
    set_policy(sb, &user, &policy).await;
    let out = sb.karpctl_as(&key, &secret, &["init", "--cluster", &cluster, "--yes"]);
    assert!(
        out.status.success(),
        "init as the installer\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = sb.karpctl_as(
        &key,
        &secret,
        &[
            "init",
            "--cluster",
            &cluster,
            "--plan",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = sb.karpctl_as(
        &key,
        &secret,
        &["uninstall", "--cluster", &cluster, "--yes"],
    );
    assert!(
        out.status.success(),
        "uninstall as the installer\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let denials = sb.aws_denials().await;
    let mine: Vec<&Value> = denials
        .iter()
        .filter(|d| d["principal"].as_str().unwrap_or("").ends_with(&user))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "only the one removed permission was ever denied: {mine:?}"
    );
}
