//! The guided setup, driven through a real pseudo-terminal against the sandbox: `karpctl
//! init --plan` without `--cluster` asks (cluster from ListClusters), writes karpctl.yaml,
//! prints the equivalent commands — which plan exactly the same — and changes nothing.
//! Without a terminal, the missing answer is an error naming the flag.

mod support;

use support::{sandbox, text};

const DOWN: &str = "\x1b[B";

#[tokio::test]
async fn guided_setup_asks_writes_the_file_and_prints_the_equivalent_command() {
    let sb = sandbox();
    let dir = std::env::temp_dir().join(support::unique("karpctl-guided"));
    std::fs::create_dir_all(&dir).unwrap();
    let before = sb.aws_calls().await.len();

    let (code, transcript) = sb.karpctl_in_terminal(
        &dir,
        &[
            ("AWS region", "\r"),
            ("EKS cluster", "\r"),
            ("get AWS credentials", &format!("{DOWN}\r")),
            ("Capacity types", &format!("{DOWN} \r")),
            ("Instance categories", "\r"),
            ("CPU limit", "\x08\x08\x08\x0864\r"),
            ("Save these answers to", "\r"),
        ],
        &["init", "--plan"],
    );
    assert_eq!(code, Some(0), "{transcript}");
    // What it asked offered the sandbox's one cluster; the answers went into the file.
    assert!(transcript.contains("sandbox"), "{transcript}");
    let file = std::fs::read_to_string(dir.join("karpctl.yaml")).expect(&transcript);
    for line in [
        "cluster: sandbox",
        "region: us-west-2",
        "identity: irsa",
        "- spot",
        "cpu: \"64\"",
    ] {
        assert!(file.contains(line), "missing {line:?} in\n{file}");
    }
    let command = "karpctl init --cluster sandbox --region us-west-2 --identity irsa --capacity-types on-demand,spot --instance-categories c,m,r --cpu-limit 64";
    assert!(transcript.contains(command), "{transcript}");
    assert!(
        transcript.contains("karpctl init -f karpctl.yaml"),
        "{transcript}"
    );
    assert!(transcript.contains("Plan: "), "{transcript}");
    // Planning changed nothing.
    assert_eq!(
        sb.writes_since(
            before,
            &["CreateRole", "CreateQueue", "CreatePolicy", "CreateTags"]
        )
        .await,
        Vec::<String>::new()
    );

    // The printed command and the written file plan the same as the questions did.
    let plan_of = |args: &[&str]| {
        let out = sb.karpctl(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let args: Vec<&str> = command.split(' ').skip(1).chain(["--plan"]).collect();
    let from_flags = plan_of(&args);
    let path = dir.join("karpctl.yaml");
    let from_file = plan_of(&["init", "-f", path.to_str().unwrap(), "--plan"]);
    assert_eq!(from_flags, from_file);
    assert!(
        transcript.contains(from_flags.trim_end()),
        "the guided plan differs from\n{from_flags}\n---\n{transcript}"
    );

    // Without a terminal nothing is asked: the error names the flag.
    let out = sb.karpctl(&["init", "--plan"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pass --cluster NAME, or -f karpctl.yaml"),
        "{stderr}"
    );

    // A malformed file names the line.
    std::fs::write(
        &path,
        "cluster: sandbox\nnodePools:\n  - name: a\n    capacityType: [spot]\n",
    )
    .unwrap();
    let out = sb.karpctl(&["init", "-f", path.to_str().unwrap(), "--plan"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 4") && stderr.contains("capacityType"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
