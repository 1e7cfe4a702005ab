//! `karpctl completion bash` loaded into a real bash: the script registers itself for
//! `karpctl`, and completing words gives the subcommands and each subcommand's flags. Needs
//! no sandbox.

use std::process::Command;

/// What bash offers for `line` (the cursor at its end), the way readline would ask: the
/// registered completion function called with COMP_WORDS/COMP_CWORD set.
fn complete(line: &str) -> Vec<String> {
    let script = Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(["completion", "bash"])
        .output()
        .expect("running karpctl completion bash");
    assert!(script.status.success(), "{script:?}");
    let dir = std::env::temp_dir().join(format!("karpctl-completion-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("karpctl.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // The driver: source the script, find the function `complete -p karpctl` registered
    // (not a name this test assumes), and call it as readline does.
    let driver = r#"
        set -u
        source "$1"
        spec=$(complete -p karpctl) || { echo "no completion registered for karpctl" >&2; exit 3; }
        func=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
        COMP_LINE="$2"
        COMP_POINT=${#COMP_LINE}
        read -r -a COMP_WORDS <<<"$COMP_LINE"
        if [[ "$COMP_LINE" == *" " ]]; then COMP_WORDS+=(""); fi
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        COMPREPLY=()
        "$func" karpctl "$cur" "$prev"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", driver, "driver"])
        .arg(&path)
        .arg(line)
        .output()
        .expect("running bash");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "bash failed for {line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_the_subcommands() {
    let words = complete("karpctl ");
    for sub in [
        "init",
        "uninstall",
        "status",
        "simulate",
        "explain",
        "instance-types",
        "convert",
        "completion",
        "version",
    ] {
        assert!(
            words.iter().any(|w| w == sub),
            "{sub} missing from {words:?}"
        );
    }
    assert!(!words.iter().any(|w| w == "--cluster"), "{words:?}");
}

#[test]
fn bash_completes_a_prefix_to_the_one_subcommand_it_names() {
    assert_eq!(complete("karpctl unin"), ["uninstall"]);
}

#[test]
fn bash_completes_a_subcommands_own_flags() {
    let init = complete("karpctl init --");
    for flag in ["--cluster", "--plan", "--yes", "--identity", "--output"] {
        assert!(
            init.iter().any(|w| w == flag),
            "{flag} missing from {init:?}"
        );
    }
    let uninstall = complete("karpctl uninstall --");
    assert!(uninstall.iter().any(|w| w == "--cluster"), "{uninstall:?}");
    assert!(
        !uninstall.iter().any(|w| w == "--identity"),
        "init's --identity offered for uninstall: {uninstall:?}"
    );
}

#[test]
fn bash_completes_flag_values_from_their_choices() {
    let shells = complete("karpctl completion ");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(
            shells.iter().any(|w| w == shell),
            "{shell} missing from {shells:?}"
        );
    }
    assert_eq!(complete("karpctl init --identity ir"), ["irsa"]);
}
