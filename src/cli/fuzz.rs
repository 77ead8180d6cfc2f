//! No input may panic: every value-taking flag of every command with boundary and random
//! values, through parsing and, for `train` and `sweep`, the whole way to a run's config,
//! its schedule and its memory estimate; and every number of a `config.json` replaced the
//! same way, through reading it back. A seeded loop, a few seconds in CI.

use std::panic::{AssertUnwindSafe, catch_unwind};

use clap::{CommandFactory, Parser};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Cli, Command};
use crate::config::ExperimentConfig;
use crate::io::data::ImageSet;
use crate::io::run_dir::RunDir;

/// Values at and beyond the limits of every numeric type a flag can have, and others
/// that are not numbers at all.
const BOUNDARY: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "0.5",
    "-0",
    "1e-320",
    "1e308",
    "-1e308",
    "1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "340282366920938463463374607431768211456",
    "",
    " ",
    "x",
    "1,2",
    ",",
    "gd:nan",
    "vb:-1",
    "gd:1",
    "aux:inf",
];

/// Values for the flags every command needs, so that the flag under test is reached.
fn required(sub: &str) -> Vec<&'static str> {
    match sub {
        "eval" | "sample" | "reconstruct" => vec!["--run", "/nonexistent/r", "--out", "/x.png"],
        "sweep" => vec!["--out", "/nonexistent/s"],
        "plot" => vec!["--sweep", "/nonexistent/s", "--out", "/nonexistent/f"],
        "verify-torch" | "import-torch" => vec!["--file", "/nonexistent/f", "--out", "/x"],
        _ => vec![],
    }
}

/// Parses `args`; for `train` and `sweep`, resolves every run's config from them as the
/// commands do (on made-up 32x32 data), with its schedule and memory estimate.
fn exercise(args: &[String]) {
    let Ok(cli) = Cli::try_parse_from(args) else {
        return;
    };
    match cli.command {
        Command::Train(a) => {
            let overrides = a.settings.overrides();
            let _ = resolve(a.model.preset, a.model.bottleneck, &overrides);
        }
        Command::Sweep(a) => {
            if let Ok(plan) = a.resolve() {
                for m in &plan.members {
                    let _ = resolve(plan.preset, m.spec, &plan.overrides);
                }
            }
        }
        _ => {}
    }
}

fn resolve(
    preset: crate::config::Preset,
    bottleneck: crate::model::bottleneck::BottleneckSpec,
    overrides: &crate::config::Overrides,
) -> crate::Result<()> {
    let images = ImageSet {
        pixels: vec![0; 2 * 3 * 32 * 32],
        labels: vec![0; 2],
        channels: 3,
        height: 32,
        width: 32,
    };
    let images = match overrides.image_size {
        Some(s) => images.downsample(s)?,
        None => images,
    };
    let shape = (images.channels, images.height);
    let config = ExperimentConfig::resolve(preset, bottleneck, "/d".into(), shape, overrides)?;
    consume(&config)
}

/// What a command computes from a config before it allocates anything.
fn consume(config: &ExperimentConfig) -> crate::Result<()> {
    let steps = config.train.total_steps(50_000)?;
    let _ = config.train.steps_per_epoch(50_000).max(steps);
    let _ = crate::model::size::training_bytes(&config.model, config.train.batch);
    let _ = crate::model::size::inference_bytes(&config.model, config.train.eval_batch);
    let _ = config.model.dims();
    Ok(())
}

/// Every value-taking flag of every subcommand: (subcommand, flag).
fn flags() -> Vec<(String, String)> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments() {
            let takes_value = arg.get_action().takes_values();
            if let (true, Some(long)) = (takes_value, arg.get_long()) {
                out.push((sub.get_name().to_string(), format!("--{long}")));
            }
        }
    }
    out
}

fn no_panic(args: &[String]) {
    let outcome = catch_unwind(AssertUnwindSafe(|| exercise(args)));
    assert!(outcome.is_ok(), "panicked on {args:?}");
}

#[test]
fn no_flag_value_panics() {
    let flags = flags();
    assert!(flags.len() > 40, "only {} flags found", flags.len());
    for (sub, flag) in &flags {
        for value in BOUNDARY {
            let mut args = vec!["ibvae".to_string(), sub.clone()];
            args.extend(required(sub).into_iter().map(String::from));
            args.extend([flag.clone(), value.to_string()]);
            no_panic(&args);
        }
    }
    // Random combinations of several flags of one command.
    let mut rng = StdRng::seed_from_u64(19);
    for _ in 0..400 {
        let (sub, _) = &flags[rng.random_range(0..flags.len())];
        let own: Vec<&String> = (flags.iter())
            .filter(|(s, _)| s == sub)
            .map(|(_, f)| f)
            .collect();
        let mut args = vec!["ibvae".to_string(), sub.clone()];
        args.extend(required(sub).into_iter().map(String::from));
        for _ in 0..rng.random_range(1..6) {
            let flag = own[rng.random_range(0..own.len())];
            let value = match rng.random_range(0..3) {
                0 => BOUNDARY[rng.random_range(0..BOUNDARY.len())].to_string(),
                1 => rng.random_range(0u64..1 << 20).to_string(),
                _ => format!(
                    "{:e}",
                    rng.random::<f64>() * 10f64.powi(rng.random_range(-30..30))
                ),
            };
            args.extend([flag.clone(), value]);
        }
        no_panic(&args);
    }
}

/// Every number of a valid `config.json` (the `small` preset's, with every optional
/// field set) replaced by boundary and random values, then read back as `eval`, `sample`
/// and `--resume` read it: an error or a config, never a panic.
#[test]
fn no_config_json_number_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunDir::new(tmp.path());
    let mut overrides = crate::config::Overrides {
        steps: Some(10),
        eval_images: Some(100),
        eval_every: Some(5),
        ema_decay: Some(0.999),
        image_size: Some(16),
        ..Default::default()
    };
    overrides.seed = Some(3);
    let config = ExperimentConfig::resolve(
        crate::config::Preset::Small,
        "gd:0.1".parse().unwrap(),
        "/d".into(),
        (3, 16),
        &overrides,
    )
    .unwrap();
    let json = serde_json::to_value(&config).unwrap();
    let mut paths = Vec::new();
    numeric_paths(&json, &mut Vec::new(), &mut paths);
    assert!(paths.len() > 25, "{} numbers found", paths.len());
    let values: Vec<serde_json::Value> = [
        "0",
        "-1",
        "1",
        "0.5",
        "1e308",
        "-1e308",
        "18446744073709551615",
        "-9223372036854775808",
        "340282366920938463463374607431768211456",
        "\"x\"",
        "null",
        "true",
        "[]",
    ]
    .iter()
    .map(|v| serde_json::from_str(v).unwrap())
    .collect();
    let mut rng = StdRng::seed_from_u64(21);
    for path in &paths {
        for value in values.iter().cloned().chain([
            serde_json::json!(rng.random::<u64>()),
            serde_json::json!(rng.random::<f64>() * 1e6 - 5e5),
        ]) {
            let mut edited = json.clone();
            *pointer(&mut edited, path) = value.clone();
            std::fs::write(run.config_path(), edited.to_string()).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(c) = run.read_config() {
                    let _ = consume(&c);
                }
            }));
            assert!(outcome.is_ok(), "panicked with {path:?} = {value}");
        }
    }
}

fn numeric_paths(v: &serde_json::Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Number(_) => out.push(at.clone()),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                numeric_paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn pointer<'a>(v: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, k| &mut v[k.as_str()])
}
