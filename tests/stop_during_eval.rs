//! A stop request during an evaluation, in a process of its own: the comparison of two
//! runs needs LibTorch's global generator to itself, which the library's tests, run in
//! parallel threads of one process, share.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ibvae::config::{ExperimentConfig, ModelConfig, Preset, TrainConfig};
use ibvae::engine::Precision;
use ibvae::io::data::{Dataset, DatasetKind, ImageSet};
use ibvae::io::run_dir::RunDir;
use ibvae::training::trainer::{self, Session, StartMode, prepare_run};

fn images(n: usize, salt: usize) -> ImageSet {
    ImageSet {
        pixels: (0..n * 3072)
            .map(|i| ((i * 7 + salt) % 256) as u8)
            .collect(),
        labels: vec![0; n],
        channels: 3,
        height: 32,
        width: 32,
    }
}

/// A stop request that arrives during an evaluation cuts it short; the checkpoint owes
/// it, and the next session does it before its first step: the run ends with the
/// metric lines and weights of a run never stopped.
#[test]
fn an_evaluation_cut_short_by_a_stop_is_done_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Dataset {
        kind: DatasetKind::Cifar10,
        train: images(8, 1),
        test: images(4, 2),
    };
    let mut train = TrainConfig::for_preset(Preset::Tiny, tmp.path().to_path_buf());
    train.steps = Some(4);
    train.eval_every = Some(1);
    let config = ExperimentConfig {
        preset: Preset::Tiny,
        model: ModelConfig::tiny(),
        train,
    };
    let session = |stop: bool| Session {
        device: ibvae::engine::cpu(),
        precision: Precision::F32,
        cuda_graph: ibvae::training::graph::GraphMode::Off,
        progress: false,
        stop: Arc::new(AtomicBool::new(stop)),
        max_session_steps: None,
        tensorboard: false,
    };
    let whole = RunDir::new(tmp.path().join("whole"));
    let config = prepare_run(&whole, config, StartMode::New).unwrap();
    trainer::train(&whole, &config, &data, &session(false)).unwrap();

    // The flag set from the start: step 1 runs, its evaluation sees the flag at once.
    let cut = RunDir::new(tmp.path().join("cut"));
    prepare_run(&cut, config.clone(), StartMode::New).unwrap();
    let out = trainer::train(&cut, &config, &data, &session(true)).unwrap();
    assert!(out.interrupted && out.state.step == 1 && out.state.pending_eval);
    assert!(cut.read_metrics().unwrap().is_empty());
    let saved = cut.saved_state().unwrap().unwrap();
    assert!(saved.pending_eval && saved.step == 1);
    let out = trainer::train(&cut, &config, &data, &session(false)).unwrap();
    assert!(!out.interrupted && out.state.finished && !out.state.pending_eval);

    let untimed = |run: &RunDir| -> Vec<serde_json::Value> {
        let mut lines = run.read_metrics().unwrap();
        for l in &mut lines {
            let m = l.as_object_mut().unwrap();
            m.retain(|k, _| !k.contains("wall") && !k.contains("per_s"));
        }
        lines
    };
    assert_eq!(untimed(&whole).len(), 4);
    assert_eq!(untimed(&whole), untimed(&cut));

    // A stop during the run's last evaluation: not finished until it is done.
    let mut one = config.clone();
    one.train.steps = Some(1);
    let (short, last) = (
        RunDir::new(tmp.path().join("short")),
        RunDir::new(tmp.path().join("last")),
    );
    prepare_run(&short, one.clone(), StartMode::New).unwrap();
    trainer::train(&short, &one, &data, &session(false)).unwrap();
    prepare_run(&last, one.clone(), StartMode::New).unwrap();
    let out = trainer::train(&last, &one, &data, &session(true)).unwrap();
    assert!(out.interrupted && !out.state.finished && out.state.pending_eval);
    let saved = last.saved_state().unwrap().unwrap();
    assert!(!saved.finished && saved.pending_eval);
    let out = trainer::train(&last, &one, &data, &session(false)).unwrap();
    assert!(!out.interrupted && out.state.finished && out.last_eval.is_some());
    assert!(last.saved_state().unwrap().unwrap().finished);
    assert_eq!(untimed(&short).len(), 1);
    assert_eq!(untimed(&short), untimed(&last));
}
