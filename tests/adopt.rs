//! Ownership: an account prepared as upstream's getting-started template leaves it (the
//! node role and the interruption queue under init's names, without karpctl's tags) stops
//! `init` with each named and nothing changed; `--adopt` takes them over and says so in the
//! plan; a policy of someone else's attached to the adopted role is left alone.

mod support;

use support::footprint::{NODE_ROLE, reset};
use support::{sandbox, text};

#[tokio::test]
async fn init_stops_at_resources_that_are_not_karpctls_and_adopt_takes_them_over() {
    let sb = sandbox();
    let cluster = sb.cluster().to_string();
    reset(sb).await;
    let aws = sb.aws().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name(NODE_ROLE)
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    sqs.create_queue()
        .queue_name(format!("Karpenter-{cluster}"))
        .send()
        .await
        .unwrap();

    let before = sb.aws_calls().await.len();
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for name in [
        format!("iam-role {NODE_ROLE}"),
        format!("sqs-queue Karpenter-{cluster}"),
        "--adopt".to_owned(),
    ] {
        assert!(stderr.contains(&name), "{name} missing: {stderr}");
    }
    let writes: Vec<_> = sb.aws_calls().await[before..]
        .iter()
        .filter(|c| c["mutating"] == true && c["service"] != "eks-auth")
        .filter(|c| ["iam", "sqs", "events", "eks"].contains(&c["service"].as_str().unwrap_or("")))
        .map(|c| c["operation"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(writes, Vec::<String>::new(), "init changed something");

    let out = sb.karpctl(&["init", "--cluster", &cluster, "--adopt", "--plan"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "iam-role {NODE_ROLE}  (update in-place: adopt: exists and is not karpctl's (--adopt)"
        )),
        "{stdout}"
    );
    let out = sb.karpctl(&["init", "--cluster", &cluster, "--adopt", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Adopted: from now on they are karpctl's, and a plain re-run converges.
    let out = sb.karpctl(&[
        "init",
        "--cluster",
        &cluster,
        "--plan",
        "--detailed-exitcode",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = sb.karpctl(&["uninstall", "--cluster", &cluster, "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
