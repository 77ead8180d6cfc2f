//! The `ibvae` binary end to end on the tiny preset: training, resuming after a stop, a
//! SIGINT and a `kill -9`, the NaN guard, and the errors a user meets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ibvae::io::tensor_file::{Stored, TensorFile};

fn ibvae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ibvae"))
}

fn run_ok(args: &[&str]) -> Output {
    let out = ibvae().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ibvae {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ibvae args`, which must stop with a checkpoint (exit code 3) and say how to
/// resume.
fn run_stopped(args: &[&str]) -> Output {
    let out = ibvae().args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "ibvae {args:?} should have stopped with a checkpoint:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    out
}

/// `ibvae plot` of the sweep in `sweep` into `figs`, with `samples` samples per run.
fn plot(sweep: &Path, figs: &Path, samples: &str) -> Output {
    run_ok(&[
        "plot",
        "--threads",
        "1",
        "--sweep",
        sweep.to_str().unwrap(),
        "--out",
        figs.to_str().unwrap(),
        "--samples",
        samples,
    ])
}

fn run_err(args: &[&str]) -> String {
    let out = ibvae().args(args).output().unwrap();
    assert!(!out.status.success(), "ibvae {args:?} should have failed");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("panicked"),
        "a panic instead of an error: {err}"
    );
    err
}

/// A small CIFAR-10 directory: 40 training and 12 test images (real ones when the
/// shared data is there, else patterned bytes; under CI the shared data must be there).
fn mini_cifar(dir: &Path) -> PathBuf {
    let out = dir.join("cifar");
    std::fs::create_dir_all(&out).unwrap();
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10");
    assert!(
        shared.exists() || std::env::var_os("CI").is_none(),
        "CI must provide {}",
        shared.display()
    );
    for (file, n) in [("data_batch_1.bin", 40), ("test_batch.bin", 12)] {
        let bytes = match std::fs::read(shared.join(file)) {
            Ok(b) => b[..3073 * n].to_vec(),
            Err(_) => (0..3073 * n)
                .map(|i| {
                    if i % 3073 == 0 {
                        (i / 3073 % 10) as u8
                    } else {
                        (i * 31 % 256) as u8
                    }
                })
                .collect(),
        };
        std::fs::write(out.join(file), bytes).unwrap();
    }
    out
}

fn train_args<'a>(data: &'a str, run: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--preset",
        "tiny",
        "--bottleneck",
        "vb:0.05",
        "--data",
        data,
        "--run",
        run,
        "--steps",
        "24",
        "--eval-every",
        "6",
        "--threads",
        "1",
        "--ema-decay",
        "0.9",
        // Exact resumption with TensorBoard's files is the subject of its own test.
        "--no-tensorboard",
    ]
}

/// `ibvae train --preset tiny --data DATA --run RUN` followed by `extra`.
fn train_tiny<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--preset", "tiny", "--data", data, "--run", run];
    args.extend_from_slice(extra);
    args
}

/// `ibvae sweep --preset tiny --gd GD --vb VB --baselines BASELINES --data DATA --out OUT`
/// followed by `extra`.
fn sweep_tiny<'a>(
    members: [&'a str; 3],
    data: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let [gd, vb, baselines] = members;
    let mut args = vec![
        "sweep",
        "--preset",
        "tiny",
        "--gd",
        gd,
        "--vb",
        vb,
        "--baselines",
        baselines,
        "--data",
        data,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// The weights, optimizer and average state of a checkpoint, by name.
fn checkpoint_tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let file = TensorFile::read(&run.join("checkpoint.safetensors")).unwrap();
    file.tensors
        .iter()
        .map(|(k, v)| match v {
            Stored::F32 { data, .. } => (k.clone(), data.clone()),
            Stored::U8 { .. } => panic!("checkpoints hold floats"),
        })
        .collect()
}

/// The metric lines without the timing fields.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("wall_s");
            o.remove("train_img_per_s");
            v
        })
        .collect()
}

fn assert_same_run(a: &Path, b: &Path) {
    let (ta, tb) = (checkpoint_tensors(a), checkpoint_tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(va == vb, "tensor {na} differs between the runs");
    }
    assert_eq!(metrics(a), metrics(b));
}

#[test]
fn interrupted_runs_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let data = data.to_str().unwrap();
    let whole = tmp.path().join("whole");
    run_ok(&train_args(data, whole.to_str().unwrap()));
    // Evaluations at steps 6, 10 (epoch end), 12, 18, 20 (epoch end) and 24.
    assert_eq!(metrics(&whole).len(), 6);

    // 1. Stopped after 9 steps (mid-epoch, between evaluations), then resumed.
    let stopped = tmp.path().join("stopped");
    let mut args = train_args(data, stopped.to_str().unwrap());
    args.extend(["--stop-after", "9"]);
    run_stopped(&args);
    run_ok(&[
        "train",
        "--run",
        stopped.to_str().unwrap(),
        "--resume",
        "--threads",
        "1",
    ]);
    assert_same_run(&whole, &stopped);

    // 2. SIGINT: a checkpoint, a clean exit, then resumed.
    let sigint = tmp.path().join("sigint");
    interrupt_and_resume(data, &sigint, "-INT");
    assert_same_run(&whole, &sigint);

    // 3. SIGTERM (SLURM's time limit, preemption, requeue) and SIGUSR1 (its warning
    // before the time limit): the same as SIGINT.
    // SIGHUP (the terminal closed): the same.
    for (name, signal) in [
        ("sigterm", "-TERM"),
        ("sigusr1", "-USR1"),
        ("sighup", "-HUP"),
    ] {
        let run = tmp.path().join(name);
        interrupt_and_resume(data, &run, signal);
        assert_same_run(&whole, &run);
    }

    // 4. kill -9 with a checkpoint every step: resumed from the last one.
    let killed = tmp.path().join("killed");
    interrupt_and_resume(data, &killed, "-KILL");
    assert_same_run(&whole, &killed);
}

/// Starts a run, waits for its first checkpoint, sends `signal`, then resumes it.
fn interrupt_and_resume(data: &str, run: &Path, signal: &str) {
    let mut args = train_args(data, run.to_str().unwrap());
    args.extend(["--checkpoint-minutes", "0"]);
    let mut cmd = ibvae();
    cmd.args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SIGHUP as a terminal delivers it, whatever this test inherited (a `nohup` above it
    // would leave it ignored, and the run would rightly ignore it too).
    #[cfg(unix)]
    unsafe {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal(2) is async-signal-safe; it runs in the child before exec.
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    while !run.join("checkpoint.safetensors").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_running = child.try_wait().unwrap().is_none();
    assert!(
        still_running,
        "the run ended before it could be interrupted"
    );
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    if signal != "-KILL" {
        assert_eq!(
            out.status.code(),
            Some(3),
            "{signal} should stop with a checkpoint: {out:?}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    }
    run_ok(&[
        "train",
        "--run",
        run.to_str().unwrap(),
        "--resume",
        "--threads",
        "1",
    ]);
}

#[test]
fn a_nan_loss_stops_the_run_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let run = tmp.path().join("nan");
    // A learning rate of 1e30 sends the weights to infinity within a step or two.
    let err = run_err(&train_tiny(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &["--steps", "20", "--lr-start", "1e30", "--lr-end", "1e30"],
    ));
    assert!(
        err.contains("the loss became") && err.contains("--lr-start"),
        "{err}"
    );
}

#[test]
fn eval_reproduces_the_last_logged_test_figure_and_the_run_refuses_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let (data, run) = (data.to_str().unwrap(), tmp.path().join("r"));
    let run_s = run.to_str().unwrap();
    // The same thread count in training and evaluation: float32 sums split the same way.
    run_ok(&train_tiny(
        data,
        run_s,
        &["--bottleneck", "gd:0.2", "--steps", "10", "--threads", "1"],
    ));
    let logged = metrics(&run).last().unwrap()["test"]["nelbo_bpd"]
        .as_f64()
        .unwrap();
    let out = run_ok(&["eval", "--threads", "1", "--run", run_s, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["nelbo_bpd"].as_f64().unwrap(), logged);
    assert_eq!(report["images"].as_u64().unwrap(), 12);
    assert!(report["gd_bound"]["total_bits_per_pixel"].as_f64().unwrap() > 0.0);
    assert!(run.join("eval.json").exists());
    // Where eval.json cannot be written (here a folder in its place, which stops root
    // too), the figures are printed all the same and the error says so.
    std::fs::remove_file(run.join("eval.json")).unwrap();
    std::fs::create_dir_all(run.join("eval.json/blocked")).unwrap();
    let blocked = ibvae()
        .args(["eval", "--threads", "1", "--run", run_s])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&blocked.stdout),
        String::from_utf8_lossy(&blocked.stderr),
    );
    assert_eq!(blocked.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains(&format!("{logged:.4}")), "{stdout}");
    assert!(stderr.contains("could not be saved"), "{stderr}");
    std::fs::remove_dir_all(run.join("eval.json")).unwrap();

    // The same directory again: refused, nothing changed.
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let err = run_err(&[
        "train", "--preset", "tiny", "--data", data, "--run", run_s, "--steps", "10",
    ]);
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    // Resuming with other settings: refused.
    let err = run_err(&[
        "train", "--preset", "small", "--data", data, "--run", run_s, "--resume",
    ]);
    assert!(err.contains("other settings"), "{err}");
    assert_eq!(
        before,
        std::fs::read(run.join("checkpoint.safetensors")).unwrap()
    );

    // A config.json that does not parse.
    std::fs::write(run.join("config.json"), "{ not json").unwrap();
    let err = run_err(&["eval", "--run", run_s]);
    assert!(
        err.contains("config.json") && err.contains("does not parse"),
        "{err}"
    );
}

#[test]
fn eval_first_logs_the_untrained_model_once_across_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let (data, run) = (data.to_str().unwrap(), tmp.path().join("r"));
    let run_s = run.to_str().unwrap();
    let args = train_tiny(data, run_s, &["--steps", "3", "--eval-first"]);
    let mut first = args.clone();
    first.extend(["--stop-after", "1"]);
    run_stopped(&first);
    run_ok(&["train", "--run", run_s, "--resume", "--threads", "1"]);
    let steps: Vec<u64> = metrics(&run)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 3]);
    let untrained = &metrics(&run)[0]["test"];
    assert!(untrained["nelbo_bpd"].as_f64().unwrap().is_finite());
    assert_eq!(untrained["images"].as_u64().unwrap(), 12);
}

/// A disk that fills up while a checkpoint is written: the file-size limit makes the
/// write fail part-way (with SIGXFSZ ignored, as a full disk would fail it).
#[cfg(unix)]
#[test]
fn a_failed_checkpoint_write_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let (data, run) = (data.to_str().unwrap(), tmp.path().join("r"));
    let run_s = run.to_str().unwrap();
    let mut first = train_tiny(data, run_s, &["--steps", "3", "--threads", "1"]);
    first.extend(["--stop-after", "1"]);
    run_stopped(&first);
    let checkpoint = run.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let limit_kib = before.len() / 2048;
    let script = format!(
        "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" train --run \"$1\" --resume --threads 1"
    );
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_ibvae"), run_s])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the save should have failed: {err}");
    assert!(
        !err.contains("panicked"),
        "a panic instead of an error: {err}"
    );
    assert!(err.contains("could not save"), "{err}");
    assert!(err.contains("untouched"), "{err}");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // With room again, the run resumes and finishes.
    run_ok(&["train", "--run", run_s, "--resume", "--threads", "1"]);
    assert_eq!(metrics(&run).last().unwrap()["step"].as_u64(), Some(3));
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let data_s = data.to_str().unwrap();
    let run = tmp.path().join("r");
    let run_s = run.to_str().unwrap();
    // A rate outside [0, 1).
    let err = run_err(&train_tiny(data_s, run_s, &["--bottleneck", "gd:1.2"]));
    assert!(err.contains("[0, 1)"), "{err}");
    assert!(!run.exists(), "nothing is written for a bad flag");
    // CUDA graphs on the CPU, in training and in the benchmark.
    let err = run_err(&train_tiny(data_s, run_s, &["--cuda-graph", "on"]));
    assert!(err.contains("--cuda-graph on needs a CUDA device"), "{err}");
    assert!(
        !run.exists(),
        "nothing is written for a refused --cuda-graph"
    );
    let err = run_err(&[
        "bench",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--cuda-graph",
        "on",
    ]);
    assert!(err.contains("--cuda-graph on needs a CUDA device"), "{err}");
    // A missing data directory.
    let err = run_err(&train_tiny("/nonexistent/x", run_s, &[]));
    assert!(err.contains("ibvae download"), "{err}");
    // A truncated data file.
    let trunc = tmp.path().join("trunc");
    std::fs::create_dir_all(&trunc).unwrap();
    std::fs::write(trunc.join("test_batch.bin"), vec![0u8; 3073 * 2 - 100]).unwrap();
    let err = run_err(&train_tiny(trunc.to_str().unwrap(), run_s, &[]));
    assert!(
        err.contains("test_batch.bin") && err.contains("3073"),
        "{err}"
    );
    // Images the preset cannot take: 28x28 with three downsamples.
    let idx = tmp.path().join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    for (name, n) in [
        ("train-images-idx3-ubyte", 8u32),
        ("t10k-images-idx3-ubyte", 4),
    ] {
        let mut b = Vec::new();
        for v in [0x0803u32, n, 28, 28] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, (n * 784) as usize));
        std::fs::write(idx.join(name), b).unwrap();
    }
    let idx_s = idx.to_str().unwrap();
    let err = run_err(&train_tiny(idx_s, run_s, &[]));
    assert!(
        err.contains("28x28") && err.contains("--downsamples 2"),
        "{err}"
    );
    // ... which train with --downsamples 2.
    run_ok(&train_tiny(
        idx_s,
        run_s,
        &["--steps", "2", "--downsamples", "2"],
    ));
    // A checkpoint from another architecture.
    let other = tmp.path().join("other");
    let other_s = other.to_str().unwrap();
    run_ok(&train_tiny(
        data_s,
        other_s,
        &["--bottleneck", "vb:0.1", "--steps", "1"],
    ));
    std::fs::copy(
        other.join("checkpoint.safetensors"),
        run.join("checkpoint.safetensors"),
    )
    .unwrap();
    let err = run_err(&["eval", "--run", run_s]);
    assert!(err.contains("another architecture"), "{err}");
    // It names what differs, each side's value.
    assert!(
        err.contains(r#"bottleneck: "vb:0.1" in the checkpoint, "gd:0.15" in config.json"#),
        "{err}"
    );
    // Numbers a drawing cannot use.
    let png = tmp.path().join("s.png");
    let png_s = png.to_str().unwrap();
    let err = run_err(&["sample", "--run", other_s, "--out", png_s, "--cols", "0"]);
    assert!(err.contains("--cols"), "{err}");
    let err = run_err(&["reconstruct", "--run", other_s, "--out", png_s, "--n", "13"]);
    assert!(err.contains("more than the 12 test images"), "{err}");
    // Model-file keys that other flags set.
    for key in [r#"{"bottleneck": "vb:0.1"}"#, r#"{"image_channels": 1}"#] {
        let file = tmp.path().join("m.json");
        std::fs::write(&file, key).unwrap();
        let err = run_err(&train_tiny(
            data_s,
            run_s,
            &["--force", "--model", file.to_str().unwrap()],
        ));
        assert!(err.contains("not by the model file"), "{err}");
    }
}

#[test]
fn a_reference_export_becomes_a_run_that_evaluates_and_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_aux.safetensors");
    let run = tmp.path().join("imported");
    let run_s = run.to_str().unwrap();
    let out = run_ok(&[
        "import-torch",
        fixture.to_str().unwrap(),
        "--out",
        run_s,
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("64122 parameters"));
    let out = run_ok(&[
        "verify-torch",
        fixture.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
    ]);
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        check["max_rel_error"]
            .as_object()
            .is_some_and(|m| !m.is_empty())
    );
    let out = run_ok(&["eval", "--threads", "1", "--run", run_s, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["aux_nll_bpd"].as_f64().unwrap() > 0.0);
    let png = tmp.path().join("s.png");
    run_ok(&[
        "sample",
        "--threads",
        "1",
        "--run",
        run_s,
        "--n",
        "2",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    // Reconstructions through the naive sampler (the whole network for every pixel).
    let recon = tmp.path().join("r.png");
    run_ok(&[
        "reconstruct",
        "--threads",
        "1",
        "--run",
        run_s,
        "--n",
        "1",
        "--samples",
        "1",
        "--method",
        "naive",
        "--out",
        recon.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&recon).unwrap().starts_with(b"\x89PNG"));
    // A second import into the same directory is refused.
    let err = run_err(&["import-torch", fixture.to_str().unwrap(), "--out", run_s]);
    assert!(err.contains("already holds a run"), "{err}");
}

/// `bench --profile` writes LibTorch's Chrome trace and prints the operations by self
/// time; a trace that cannot be written is refused before any work.
#[test]
fn bench_profile_writes_a_trace_and_lists_the_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.json");
    let args = |trace: &str| {
        [
            "bench",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--threads",
            "1",
            "--profile",
            trace,
        ]
        .map(str::to_owned)
    };
    let args_ok = args(trace.to_str().unwrap());
    let out = run_ok(&args_ok.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("profile of the 2 timed steps"), "{text}");
    let convolution = text
        .lines()
        .find(|l| l.ends_with("aten::convolution_backward"))
        .unwrap_or_else(|| panic!("no convolution_backward line in {text}"));
    // self ms, share, calls per step (two backward passes of every convolution).
    let fields: Vec<f64> = convolution
        .split_whitespace()
        .take(4)
        .map(|f| f.trim_end_matches('%').parse().unwrap())
        .collect();
    assert!(
        fields[0] > 0.0 && fields[1] > 0.0 && fields[2] >= 10.0,
        "{convolution}"
    );
    assert!(text.contains("per step: wall"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("train_img_per_s "));
    let json = std::fs::read_to_string(&trace).unwrap();
    assert!(json.contains("traceEvents") && json.contains("aten::convolution_backward"));
    let bad = tmp.path().join("missing/trace.json");
    let args_bad = args(bad.to_str().unwrap());
    let err = run_err(&args_bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("missing/trace.json"), "{err}");
    assert!(!err.contains("step "), "refused before the work: {err}");
}

#[test]
fn bench_sample_times_each_method_and_states_the_speed_up() {
    let out = run_ok(&[
        "bench-sample",
        "--preset",
        "tiny",
        "--n",
        "2",
        "--methods",
        "cached,rows",
        "--threads",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("cached"), "{text}");
    assert!(
        lines[2].contains("of 2 images identical to cached"),
        "{text}"
    );
    let last = lines.last().unwrap();
    let ratio: f64 = last
        .strip_prefix("speed-up cached over rows: ")
        .and_then(|r| r.strip_suffix('x'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no speed-up line: {text}"));
    assert!(ratio > 0.0);
    let err = run_err(&["bench-sample", "--preset", "tiny", "--methods", "fast"]);
    assert!(err.contains("unknown sampling method 'fast'"), "{err}");
}

#[test]
fn info_bound_prints_json_and_a_scale_table() {
    let out = run_ok(&[
        "info-bound",
        "--rate",
        "0.15",
        "--values",
        "1,2,3",
        "--scale",
        "100",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "rate",
        "sigma",
        "scale",
        "gd_bound_nats",
        "gd_exact_nats",
        "additive_bound_nats",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    assert!(v["gd_bound_nats"].as_f64().unwrap() >= v["gd_exact_nats"].as_f64().unwrap());
    let out = run_ok(&["info-bound", "--rate", "0.15", "--values", "1,2,3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0.01") && text.contains("100"), "{text}");
    let err = run_err(&["info-bound", "--rate", "1", "--values", "1,2"]);
    assert!(err.contains("[0, 1)"), "{err}");
    // At the ends of float64's range the Gaussian-dropout figures are those at scale 1.
    let json = |scale: &str| -> serde_json::Value {
        let out = run_ok(&[
            "info-bound",
            "--rate",
            "0.15",
            "--values",
            "1,2,3",
            "--scale",
            scale,
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (one, huge) = (json("1"), json("1e300"));
    assert_eq!(one["gd_bound_nats"], huge["gd_bound_nats"]);
    assert!(huge["additive_bound_nats"].as_f64().unwrap().is_finite());
    // More values than the exact integral is computed for: refused, not minutes of work.
    let many: Vec<String> = (1..=257).map(|i| i.to_string()).collect();
    let err = run_err(&["info-bound", "--rate", "0.1", "--values", &many.join(",")]);
    assert!(err.contains("at most 256"), "{err}");
}

#[test]
fn params_match_the_reference_counts() {
    for (preset, bottleneck, want) in [
        ("tiny", "gd:0.1", 63_222),
        ("tiny", "vb:0.05", 63_322),
        ("tiny", "aux", 64_122),
        ("small", "gd:0.15", 978_030),
        ("small", "vb:0.02", 978_370),
        ("small", "aux", 981_330),
        ("paper", "gd:0.15", 81_887_662),
        ("paper", "vb:0.02", 81_889_282),
        ("paper", "aux", 81_913_362),
    ] {
        let out = run_ok(&["params", "--preset", preset, "--bottleneck", bottleneck]);
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().unwrap();
        assert_eq!(last, format!("params {want}"), "{preset} {bottleneck}");
    }
}

#[test]
fn a_sweep_of_three_runs_resumes_plots_and_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let out = tmp.path().join("sweep");
    let args = sweep_tiny(
        ["0.3", "0.1", "none"],
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        &["--steps", "3", "--jobs", "2", "--threads", "1"],
    );
    run_ok(&args);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].starts_with("gd,0.3,gd-0.3,") && lines[3].starts_with("none,0,none,"),
        "{csv}"
    );
    // The GD row has its information bound, the others leave it empty.
    assert!(!lines[1].split(',').nth(8).unwrap().is_empty());
    assert!(lines[2].split(',').nth(8).unwrap().is_empty());
    // Started again: everything is skipped, results unchanged.
    let again = run_ok(&args);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("skipped")
            .count(),
        3
    );
    assert_eq!(
        csv,
        std::fs::read_to_string(out.join("results.csv")).unwrap()
    );
    // Plot: both figures, and a panel of samples of the GD and VB runs.
    let figs = tmp.path().join("figs");
    plot(&out, &figs, "2");
    for f in ["tradeoff.svg", "tradeoff.png", "samples.png"] {
        assert!(figs.join(f).exists(), "{f} missing");
    }
    let svg = std::fs::read_to_string(figs.join("tradeoff.svg")).unwrap();
    assert!(svg.contains("p=0.3") && svg.contains("beta=0.1") && svg.contains("none"));
    // A sample grid of one run.
    let grid = tmp.path().join("grid.png");
    run_ok(&[
        "sample",
        "--threads",
        "1",
        "--run",
        out.join("gd-0.3").to_str().unwrap(),
        "--n",
        "4",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"));
    // TensorBoard: the sweep's own file holds the HParams experiment; each run its own
    // session.
    let tags: Vec<String> = board_values(&out).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(tags, ["_hparams_/experiment"]);
    let tags: Vec<String> = (board_values(&out.join("gd-0.3")).into_iter())
        .map(|(t, _, _)| t)
        .collect();
    assert!(tags.iter().any(|t| t == "_hparams_/session_start_info"));
    // Curves of chosen runs, and of every member of the sweep.
    let curves = tmp.path().join("curves");
    let (gd, vb) = (out.join("gd-0.3"), out.join("vb-0.1"));
    run_ok(&[
        "plot",
        "--run",
        gd.to_str().unwrap(),
        "--run",
        vb.to_str().unwrap(),
        "--out",
        curves.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(curves.join("curves.svg")).unwrap();
    assert!(svg.contains("gd-0.3") && svg.contains("vb-0.1"));
    assert!(
        std::fs::read(curves.join("curves.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    let all = tmp.path().join("all");
    run_ok(&[
        "plot",
        "--sweep",
        out.to_str().unwrap(),
        "--curves",
        "--samples",
        "0",
        "--out",
        all.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(all.join("curves.svg")).unwrap();
    assert!(svg.contains("none"), "{svg}");
}

#[test]
fn an_interrupted_sweep_resumes_the_unfinished_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let out = tmp.path().join("sweep");
    // The run stopped half way, as an interrupted sweep leaves it.
    let run = out.join("gd-0.2");
    run_stopped(&train_tiny(
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        &[
            "--bottleneck",
            "gd:0.2",
            "--steps",
            "6",
            "--seed",
            "0",
            "--threads",
            "1",
            "--stop-after",
            "3",
        ],
    ));
    let out_s = out.to_str().unwrap();
    let o = run_ok(&sweep_tiny(
        ["0.2", "", ""],
        data.to_str().unwrap(),
        out_s,
        &["--steps", "6", "--threads", "1"],
    ));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("skipped"));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().contains(",6,"), "{csv}");
}

/// Fashion-MNIST-shaped IDX files (28x28, one channel): `train` training and `test` test
/// images of patterned bytes.
fn synthetic_idx(dir: &Path, train: usize, test: usize) -> PathBuf {
    let out = dir.join("idx");
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, n: usize, images: bool| {
        let mut bytes = Vec::new();
        let (magic, dims): (u32, Vec<u32>) = if images {
            (0x0803, vec![n as u32, 28, 28])
        } else {
            (0x0801, vec![n as u32])
        };
        bytes.extend(magic.to_be_bytes());
        for d in &dims {
            bytes.extend(d.to_be_bytes());
        }
        let per = if images { 28 * 28 } else { 1 };
        bytes.extend((0..n * per).map(|i| {
            if images {
                (i * 37 % 256) as u8
            } else {
                (i % 10) as u8
            }
        }));
        std::fs::write(out.join(name), bytes).unwrap();
    };
    write("train-images-idx3-ubyte", train, true);
    write("train-labels-idx1-ubyte", train, false);
    write("t10k-images-idx3-ubyte", test, true);
    write("t10k-labels-idx1-ubyte", test, false);
    std::fs::canonicalize(out).unwrap()
}

/// A sweep on 28x28 grey images needs `--downsamples 2`: every train setting reaches its
/// runs through their config.json, which is the one `ibvae train` writes for the same
/// flags.
#[test]
fn a_fashion_mnist_shaped_sweep_passes_every_setting_to_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synthetic_idx(tmp.path(), 12, 6);
    let data_s = data.to_str().unwrap();
    let out = tmp.path().join("sweep");
    let settings = [
        "--steps",
        "2",
        "--downsamples",
        "2",
        "--ema-decay",
        "0.9",
        "--eval-every",
        "1",
        "--lr-start",
        "3e-4",
        "--seed",
        "5",
        "--data",
        data_s,
        "--threads",
        "1",
    ];
    let mut sweep = vec![
        "sweep",
        "--preset",
        "tiny",
        "--gd",
        "0.3",
        "--vb",
        "",
        "--baselines",
        "",
    ];
    sweep.extend(settings);
    sweep.extend(["--out", out.to_str().unwrap()]);
    run_ok(&sweep);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().starts_with("gd,0.3,gd-0.3,"),
        "{csv}"
    );
    let member: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("gd-0.3/config.json")).unwrap())
            .unwrap();
    assert_eq!(member["model"]["downsamples"], 2);
    assert_eq!(member["model"]["image_channels"], 1);
    assert_eq!(member["model"]["image_size"], 28);
    assert_eq!(member["train"]["ema_decay"], 0.9);
    assert_eq!(member["train"]["eval_every"], 1);
    // The run trained with its Polyak average: the evaluations came every step.
    assert_eq!(metrics(&out.join("gd-0.3")).len(), 2);
    // `ibvae train` with the same flags writes the same config.
    let run = tmp.path().join("alone");
    let mut train = vec!["train", "--preset", "tiny", "--bottleneck", "gd:0.3"];
    train.extend(settings);
    train.extend(["--run", run.to_str().unwrap()]);
    run_ok(&train);
    let alone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(member, alone);
}

/// Brings up the single-node SLURM of `../shared/slurm/start.sh`. Where it cannot start
/// (not root, no script), the test is skipped with the reason, except under CI.
fn start_slurm() -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/slurm/start.sh");
    let ci = std::env::var_os("CI").is_some();
    let reason = if !script.exists() {
        format!("{} is missing", script.display())
    } else {
        match Command::new("bash").arg(&script).output() {
            Ok(out) if out.status.success() => return true,
            Ok(out) => format!(
                "start.sh failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => format!("start.sh could not run: {e}"),
        }
    };
    assert!(!ci, "SLURM must start under CI: {reason}");
    eprintln!("skipping: SLURM cannot start here ({reason})");
    false
}

/// Polls `done` every half second for up to `secs` seconds.
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `state` column of `ibvae sweep --out DIR --status` for every run.
fn sweep_states(out: &Path) -> Vec<String> {
    let text = String::from_utf8_lossy(
        &run_ok(&["sweep", "--out", out.to_str().unwrap(), "--status"]).stdout,
    )
    .into_owned();
    text.lines()
        .skip(1)
        .filter(|l| !l.starts_with("wrote"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// A tiny sweep submitted to a real SLURM finishes with its results; a run requeued by
/// `scontrol requeue` while it trains continues from its checkpoint and ends exactly as a
/// run that was never interrupted.
#[test]
fn sweeps_run_on_slurm_and_requeued_runs_continue_exactly() {
    if !start_slurm() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let data_s = data.to_str().unwrap();
    // 1. Three runs, one array job.
    let out = tmp.path().join("sweep");
    let out_s = out.to_str().unwrap();
    let sweep = sweep_tiny(
        ["0.3", "0.1", "none"],
        data_s,
        out_s,
        &["--steps", "3", "--threads", "1", "--slurm"],
    );
    let submitted = run_ok(&sweep);
    assert!(String::from_utf8_lossy(&submitted.stdout).contains("submitted job"));
    assert!(out.join("slurm/sweep.sbatch").exists() && out.join("slurm/job_ids").exists());
    wait_until(240, "the SLURM sweep", || {
        sweep_states(&out).iter().all(|s| s == "done")
    });
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // Submitted again: nothing is left to run.
    let again = run_ok(&sweep);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to submit"));

    // 2. A run requeued by `scontrol requeue` while it trains (SIGTERM to every process).
    let (out, job) = submit_long_run(tmp.path(), &data, "requeued", "gd:0.2");
    let run = out.join("gd-0.2");
    wait_until(120, "a first checkpoint", || {
        run.join("checkpoint.safetensors").exists()
    });
    let requeue = Command::new("scontrol")
        .args(["requeue", &format!("{job}_0")])
        .output()
        .unwrap();
    assert!(requeue.status.success(), "{requeue:?}");
    wait_until(300, "the requeued run", || sweep_states(&out) == ["done"]);
    let log = std::fs::read_to_string(out.join("slurm/task-0.out")).unwrap();
    assert!(log.contains("restart 1"), "the task ran again: {log}");
    assert!(log.contains("stopped by SIGTERM"), "{log}");
    assert_same_as_uninterrupted(tmp.path(), &run);

    // 3. SIGUSR1, SLURM's warning before a time limit, which reaches only the batch
    // shell: it passes it on, the run checkpoints, and the task requeues itself.
    let (out, job) = submit_long_run(tmp.path(), &data, "warned", "vb:0.1");
    let run = out.join("vb-0.1");
    wait_until(120, "a first checkpoint", || {
        run.join("checkpoint.safetensors").exists()
    });
    let warn = Command::new("scancel")
        .args(["--batch", "--signal=USR1", &format!("{job}_0")])
        .output()
        .unwrap();
    assert!(warn.status.success(), "{warn:?}");
    wait_until(300, "the run requeued by its task", || {
        sweep_states(&out) == ["done"]
    });
    let log = std::fs::read_to_string(out.join("slurm/task-0.out")).unwrap();
    assert!(log.contains("stopped by SIGUSR1"), "{log}");
    assert!(log.contains("restart 1"), "the task requeued itself: {log}");
    assert_same_as_uninterrupted(tmp.path(), &run);
}

/// Submits a one-run sweep of 200 tiny steps with a checkpoint at every step; returns
/// its directory and job id.
fn submit_long_run(tmp: &Path, data: &Path, name: &str, spec: &str) -> (PathBuf, String) {
    let out = tmp.join(name);
    let (kind, value) = spec.split_once(':').unwrap();
    let (gd, vb) = if kind == "gd" {
        (value, "")
    } else {
        ("", value)
    };
    let submitted = run_ok(&sweep_tiny(
        [gd, vb, ""],
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--steps",
            "200",
            "--checkpoint-minutes",
            "0",
            "--threads",
            "1",
            "--slurm",
            // 20 evaluations: their sample grids would only slow the test.
            "--no-tensorboard",
        ],
    ));
    let text = String::from_utf8_lossy(&submitted.stdout).into_owned();
    let job = text
        .split("submitted job ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .expect("the job id is printed")
        .to_string();
    (out, job)
}

/// The config of `run` trained here without interruption ends with the same weights and
/// metrics.
fn assert_same_as_uninterrupted(tmp: &Path, run: &Path) {
    let whole = tmp.join(format!(
        "whole-{}",
        run.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&whole).unwrap();
    std::fs::copy(run.join("config.json"), whole.join("config.json")).unwrap();
    run_ok(&[
        "train",
        "--run",
        whole.to_str().unwrap(),
        "--resume",
        "--threads",
        "1",
        "--no-tensorboard",
    ]);
    assert_same_run(&whole, run);
}

/// `--seeds`: one run per configuration and seed, the seed in results.csv, and the plot's
/// point for the configuration says over how many seeds it is the mean.
#[test]
fn a_sweep_over_seeds_plots_means_with_error_bars() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let out = tmp.path().join("sweep");
    run_ok(&sweep_tiny(
        ["0.3", "", ""],
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--seeds",
            "0,1",
            "--steps",
            "2",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
    ));
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].ends_with(",seed"), "{csv}");
    assert!(
        rows[1].contains(",gd-0.3-s0,") && rows[1].ends_with(",0"),
        "{csv}"
    );
    assert!(
        rows[2].contains(",gd-0.3-s1,") && rows[2].ends_with(",1"),
        "{csv}"
    );
    // Two seeds, two different runs.
    assert_ne!(rows[1].split(',').nth(3), rows[2].split(',').nth(3));
    let figs = tmp.path().join("figs");
    plot(&out, &figs, "0");
    let svg = std::fs::read_to_string(figs.join("tradeoff.svg")).unwrap();
    assert!(svg.contains("p=0.3 (2 seeds)"), "{svg}");
}

/// The settings of the 16x16 experiment: a model file over a preset, the images shrunk
/// by box averaging, the PixelCNN++'s dropout off and a held learning rate, all recorded
/// in config.json; a model file with a key that is not a setting is a clear error.
#[test]
fn a_model_file_shrunk_images_dropout_and_a_held_learning_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let model = tmp.path().join("model.json");
    std::fs::write(
        &model,
        r#"{"n_blocks": 1, "W": 16, "Wb": 8, "dec_out": 8, "z_channels": 4, "downsamples": 2,
            "nr_resnet": 1, "nr_filters": 8, "nr_mix": 5, "v_dim": 10, "mix_hidden": 18}"#,
    )
    .unwrap();
    let run = tmp.path().join("run");
    run_ok(&[
        "train",
        "--preset",
        "small",
        "--model",
        model.to_str().unwrap(),
        "--image-size",
        "16",
        "--dropout",
        "0",
        "--lr-hold",
        "0.5",
        "--lr-start",
        "1e-3",
        "--lr-end",
        "1e-4",
        "--steps",
        "4",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["image_size"], 16);
    assert_eq!(config["model"]["nr_mix"], 5);
    assert_eq!(config["model"]["width"], 16);
    assert_eq!(config["model"]["dropout_p"], 0.0);
    assert_eq!(config["train"]["image_size"], 16);
    assert_eq!(config["train"]["lr_hold"], 0.5);
    // The learning rate was held for the first half: the log of step 4 shows the anneal's end.
    let last = metrics(&run).pop().unwrap();
    assert!(
        (last["lr"].as_f64().unwrap() - 1e-4).abs() < 1e-12,
        "{last}"
    );
    // Evaluating and sampling the run use its shrunk images.
    let eval = run_ok(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
        "--threads",
        "1",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(report["images"], 12);
    std::fs::write(&model, r#"{"nr_filter": 8}"#).unwrap();
    let err = run_err(&[
        "train",
        "--preset",
        "small",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--run",
        tmp.path().join("bad").to_str().unwrap(),
    ]);
    assert!(err.contains("`nr_filter` is not a model setting"), "{err}");
}

/// A run directory written by release 0.1.0 (`tests/fixtures/run-0.1.0`: the tiny preset
/// with the model file below, vb:0.05, Polyak average, stopped at step 6 of 12) resumes
/// to its end and evaluates with this release:
/// `ibvae train --preset tiny --model m.json --bottleneck vb:0.05 --data DATA --run R
/// --steps 12 --eval-every 3 --threads 1 --ema-decay 0.9 --image-size 16 --downsamples 2
/// --stop-after 6`, with `m.json` = `{"nr_filters":4,"W":8,"Wb":4,"dec_out":4,
/// "z_channels":2,"mix_hidden":14,"nr_mix":2,"v_dim":4}` and DATA the first 40 training
/// and 12 test images of the shared CIFAR-10 (`mini_cifar`).
#[test]
fn a_run_directory_of_release_0_1_0_resumes_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-0.1.0");
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    for file in ["checkpoint.safetensors", "metrics.jsonl"] {
        std::fs::copy(fixture.join(file), run.join(file)).unwrap();
    }
    // The run's data directory was a temporary one: point it at this test's copy.
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("config.json")).unwrap()).unwrap();
    config["train"]["data"] = serde_json::Value::from(data.to_str().unwrap());
    std::fs::write(run.join("config.json"), config.to_string()).unwrap();
    let run_s = run.to_str().unwrap();
    let logged_before = metrics(&run);
    assert_eq!(logged_before.len(), 2);

    run_ok(&["train", "--run", run_s, "--resume", "--threads", "1"]);
    let logged = metrics(&run);
    let steps: Vec<u64> = logged.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    // Every third step and the end of the epoch of 40 images (10 steps of 4).
    assert_eq!(steps, [3, 6, 9, 10, 12]);
    // The lines of release 0.1.0 are kept as they were.
    assert_eq!(logged[..2], logged_before[..]);
    for m in &logged {
        assert!(m["test"]["nelbo_bpd"].as_f64().unwrap().is_finite(), "{m}");
    }
    let out = run_ok(&["eval", "--threads", "1", "--run", run_s, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["nelbo_bpd"], logged[4]["test"]["nelbo_bpd"]);
    assert!(report["vb_rate_bpd"].as_f64().unwrap() > 0.0);
}

/// Numbers no command can use are refused with the flag they came from, not a panic.
#[test]
fn an_evaluation_batch_of_zero_and_a_run_too_long_to_count_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let (data, run) = (data.to_str().unwrap(), tmp.path().join("r"));
    let run_s = run.to_str().unwrap();
    let err = run_err(&train_tiny(
        data,
        run_s,
        &["--epochs", "6148914691236517206"],
    ));
    assert!(err.contains("--epochs"), "{err}");
    run_ok(&train_tiny(
        data,
        run_s,
        &["--steps", "2", "--threads", "1"],
    ));
    let err = run_err(&["eval", "--run", run_s, "--batch", "0"]);
    assert!(err.contains("--batch"), "{err}");
}

/// A reader that goes away (`| head -1`) ends a command quietly; a full device is a
/// one-line error; a training run whose log pipe closed trains on to its end.
#[cfg(unix)]
#[test]
fn closed_pipes_and_full_devices_end_commands_quietly_but_not_training() {
    let exe = env!("CARGO_BIN_EXE_ibvae");
    // A pipe whose reading end is closed before the command starts.
    let closed_pipe = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    let out = ibvae()
        .args(["params", "--preset", "tiny"])
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(
        stderr.is_empty(),
        "a closed pipe should end quietly: {stderr}"
    );

    if Path::new("/dev/full").exists() {
        let full = Command::new("bash")
            .args(["-c", "\"$0\" params --preset tiny > /dev/full", exe])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&full.stderr);
        assert_eq!(full.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("could not write the output"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let run = tmp.path().join("r");
    let status = ibvae()
        .args(train_tiny(
            data.to_str().unwrap(),
            run.to_str().unwrap(),
            &["--steps", "6", "--threads", "1"],
        ))
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(metrics(&run).iter().any(|m| m["step"] == 6));
}

/// Waits until `path` exists, for at most two minutes.
fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process id recorded in a directory's lock file.
fn lock_pid(dir: &Path) -> u32 {
    let text = std::fs::read_to_string(dir.join(".lock")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// The process that holds the lock of `dir`, if one does.
fn lock_holder(dir: &Path) -> Option<u32> {
    ibvae::io::lock::holder(dir).map(|h| h.pid)
}

/// Whether process `pid` still runs (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[cfg(target_os = "linux")]
#[test]
fn a_run_directory_has_one_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let (data, run) = (data.to_str().unwrap(), tmp.path().join("r"));
    let run_s = run.to_str().unwrap();
    let args = train_tiny(
        data,
        run_s,
        &[
            "--steps",
            "100000",
            "--threads",
            "1",
            "--checkpoint-minutes",
            "0",
        ],
    );
    let mut first = ibvae()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&run.join("checkpoint.safetensors"));
    let pid = first.id().to_string();
    let config = std::fs::read(run.join("config.json")).unwrap();
    for second in [
        vec!["train", "--run", run_s, "--resume", "--threads", "1"],
        train_tiny(data, run_s, &["--force", "--bottleneck", "vb:0.1"]),
    ] {
        let err = run_err(&second);
        assert!(err.contains(&format!("in use by process {pid}")), "{err}");
    }
    assert_eq!(std::fs::read(run.join("config.json")).unwrap(), config);
    // Killed outright, the first trainer leaves no lock behind.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut resume = vec!["train", "--run", run_s, "--resume", "--threads", "1"];
    resume.extend(["--stop-after", "1"]);
    run_stopped(&resume);
    // A mistyped path is not a new run.
    let typo = tmp.path().join("typo");
    let err = run_err(&["train", "--run", typo.to_str().unwrap(), "--resume"]);
    assert!(err.contains("no run to resume"), "{err}");
    assert!(!typo.exists());
    // Flags on a resume: the conflict, named, not a question of data directories.
    let err = run_err(&[
        "train",
        "--run",
        run_s,
        "--resume",
        "--preset",
        "tiny",
        "--checkpoint-minutes",
        "0",
        "--steps",
        "7",
    ]);
    assert!(err.contains("train.steps: 100000 here, 7 asked"), "{err}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_sweep_directory_has_one_sweep_whose_children_stop_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let out = tmp.path().join("sweep");
    let (data, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let long = [
        "--steps",
        "100000",
        "--threads",
        "1",
        "--checkpoint-minutes",
        "0",
    ];
    let mut sweep = ibvae()
        .args(sweep_tiny(["0.2", "", ""], data, out_s, &long))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = out.join("gd-0.2");
    wait_for(&run.join("checkpoint.safetensors"));
    let child = lock_pid(&run);
    assert!(alive(child));
    let status = run_ok(&["sweep", "--out", out_s, "--status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("running ({child})")), "{status}");
    let err = run_err(&sweep_tiny(["0.2", "", ""], data, out_s, &long));
    assert!(
        err.contains(&format!("in use by process {} (ibvae sweep)", sweep.id())),
        "{err}"
    );
    // kill -9 of the sweep: its child saves a checkpoint and exits.
    sweep.kill().unwrap();
    sweep.wait().unwrap();
    let t0 = Instant::now();
    while alive(child) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the sweep's child outlived it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Resumed, then SIGTERM to the sweep alone: it passes the stop on, its child saves
    // a checkpoint, and the sweep exits with the code of a stop (3).
    let mut sweep = ibvae()
        .args(sweep_tiny(["0.2", "", ""], data, out_s, &long))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Pid 0: the new owner holds the lock but has not written its pid yet.
    while lock_holder(&run).is_none_or(|pid| pid == child || pid == 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the run did not resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = lock_pid(&run);
    let status = Command::new("kill")
        .args(["-TERM", &sweep.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(sweep.wait().unwrap().code(), Some(3));
    assert!(!alive(second), "the sweep's child outlived it");
    // A rerun with other settings is refused and names them; --force starts over.
    let short = ["--steps", "4", "--threads", "1"];
    let err = run_err(&sweep_tiny(["0.2", "", ""], data, out_s, &short));
    assert!(
        err.contains("gd-0.2: ") && err.contains("train.steps: 100000 here, 4 asked"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    let mut forced = sweep_tiny(["0.2", "", ""], data, out_s, &short);
    forced.push("--force");
    run_ok(&forced);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().nth(1).unwrap().contains(",4,"), "{csv}");
}

/// Sizes that cannot fit in memory are refused with the estimate and what is available,
/// before anything is allocated or written.
#[test]
fn sizes_that_cannot_fit_in_memory_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let data_s = data.to_str().unwrap();
    let run = tmp.path().join("r");
    let run_s = run.to_str().unwrap();
    let fits = |err: &str| {
        assert!(
            err.contains("needs about") && err.contains("is available"),
            "{err}"
        );
    };
    fits(&run_err(&train_tiny(
        data_s,
        run_s,
        &["--batch", "1000000000"],
    )));
    for model in [
        r#"{"nr_filters": 100000, "width": 100000}"#,
        r#"{"nr_filters": 18446744073709551615}"#,
        r#"{"nr_mix": 1000000000}"#,
    ] {
        let file = tmp.path().join("m.json");
        std::fs::write(&file, model).unwrap();
        fits(&run_err(&train_tiny(
            data_s,
            run_s,
            &["--model", file.to_str().unwrap()],
        )));
    }
    assert!(
        !run.exists(),
        "nothing is written for a run that cannot fit"
    );
    fits(&run_err(&[
        "bench",
        "--preset",
        "tiny",
        "--batch",
        "1000000000",
        "--steps",
        "1",
    ]));
    run_ok(&train_tiny(
        data_s,
        run_s,
        &["--steps", "1", "--threads", "1"],
    ));
    let png = tmp.path().join("s.png");
    fits(&run_err(&[
        "sample",
        "--run",
        run_s,
        "--n",
        "4000000000",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(!png.exists());
}

/// Every summary value of the run's TensorBoard event files, as (tag, step, value) with
/// scalars as `Some(value)`, each record read with its length and masked CRC-32C checked.
fn board_values(run: &Path) -> Vec<(String, i64, Option<f32>)> {
    use ibvae::io::tensorboard::{EventWhat, SummaryValueKind, read_events};
    let mut files: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("events.out.tfevents."))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no event file in {}", run.display());
    let mut out = Vec::new();
    for f in files {
        for event in read_events(&f).unwrap() {
            if let Some(EventWhat::Summary(s)) = event.what {
                for v in s.value {
                    let scalar = match v.value {
                        Some(SummaryValueKind::SimpleValue(x)) => Some(x),
                        _ => None,
                    };
                    out.push((v.tag, event.step, scalar));
                }
            }
        }
    }
    out
}

/// The scalar series `tag`, by step.
fn series(values: &[(String, i64, Option<f32>)], tag: &str) -> Vec<(i64, f32)> {
    let mut s: Vec<(i64, f32)> = (values.iter())
        .filter(|(t, _, v)| t == tag && v.is_some())
        .map(|(_, step, v)| (*step, v.unwrap()))
        .collect();
    s.sort_by_key(|(step, _)| *step);
    s
}

#[test]
fn tensorboard_event_files_mirror_metrics_and_a_resume_adds_no_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let data = data.to_str().unwrap();
    let args = |run: &Path| -> Vec<String> {
        let mut a: Vec<String> = train_tiny(
            data,
            run.to_str().unwrap(),
            &[
                "--steps",
                "12",
                "--eval-every",
                "3",
                "--threads",
                "1",
                "--seed",
                "5",
            ],
        )
        .into_iter()
        .map(String::from)
        .collect();
        a.push("--ema-decay".into());
        a.push("0.9".into());
        a
    };
    let whole = tmp.path().join("whole");
    let a = args(&whole);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let values = board_values(&whole);
    let lines = metrics(&whole);
    let steps: Vec<i64> = lines.iter().map(|m| m["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [3, 6, 9, 10, 12]);
    for (tag, key, test) in [
        ("test/nelbo_bpd", "nelbo_bpd", true),
        ("test/kl_bpd", "kl_bpd", true),
        ("train/nelbo_bpd", "train_nelbo_bpd", false),
        ("train/kl_bpd", "train_kl_bpd", false),
        ("train/lr", "lr", false),
    ] {
        let from_jsonl: Vec<(i64, f32)> = (lines.iter())
            .map(|m| {
                let v = if test { &m["test"][key] } else { &m[key] };
                (m["step"].as_i64().unwrap(), v.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(series(&values, tag), from_jsonl, "{tag}");
    }
    for tag in ["samples", "reconstructions"] {
        let at: Vec<i64> = (values.iter())
            .filter(|(t, _, _)| t == tag)
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(at, steps, "{tag}");
    }
    for tag in [
        "config",
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    ] {
        assert!(values.iter().any(|(t, _, _)| t == tag), "no {tag}");
    }

    // Stopped at step 7; the rest trained; then the checkpoint of step 7 put back, as a
    // kill after step 12's metrics but before its checkpoint would leave the run.
    let cut = tmp.path().join("cut");
    let mut a = args(&cut);
    a.extend(["--stop-after".into(), "7".into()]);
    run_stopped(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let at_7 = std::fs::read(cut.join("checkpoint.safetensors")).unwrap();
    let cut_s = cut.to_str().unwrap();
    let resume = ["train", "--run", cut_s, "--resume", "--threads", "1"];
    run_ok(&resume);
    std::fs::write(cut.join("checkpoint.safetensors"), &at_7).unwrap();
    std::fs::remove_file(cut.join("checkpoint.prev.safetensors")).unwrap();
    run_ok(&resume);
    let resumed = board_values(&cut);
    for tag in ["test/nelbo_bpd", "train/nelbo_bpd", "train/lr"] {
        assert_eq!(series(&resumed, tag), series(&values, tag), "{tag}");
    }
    assert_eq!(metrics(&cut), metrics(&whole));

    // --force starts over without the old run's files.
    run_ok(&train_tiny(
        data,
        whole.to_str().unwrap(),
        &["--steps", "1", "--threads", "1", "--force"],
    ));
    let fresh = board_values(&whole);
    assert_eq!(series(&fresh, "test/nelbo_bpd").len(), 1);
    assert_eq!(fresh.iter().filter(|(t, _, _)| t == "config").count(), 1);
    // --no-tensorboard writes none.
    let quiet = tmp.path().join("quiet");
    let mut a = args(&quiet);
    a.push("--no-tensorboard".into());
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!std::fs::read_dir(&quiet).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tfevents")
    }));
}

/// Started under `nohup` (SIGHUP ignored), a run ignores the hang-up and keeps training;
/// a SIGTERM still stops it with a checkpoint.
#[cfg(unix)]
#[test]
fn a_run_started_under_nohup_ignores_the_hang_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = mini_cifar(tmp.path());
    let run = tmp.path().join("r");
    let script = "trap '' HUP; exec \"$0\" train --preset tiny --data \"$1\" --run \"$2\" \
                  --steps 100000 --threads 1 --checkpoint-minutes 0 --no-tensorboard";
    let mut child = Command::new("bash")
        .args(["-c", script, env!("CARGO_BIN_EXE_ibvae")])
        .arg(&data)
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&run.join("checkpoint.safetensors"));
    let pid = child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-HUP");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the hang-up stopped the run"
    );
    signal("-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}
