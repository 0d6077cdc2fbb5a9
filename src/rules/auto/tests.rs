//! The recognition on small logs: one behaviour per test. The recorded framework logs are run whole by
//! `tests/it/recognise.rs`; block scanning against line-by-line scanning over any chunking is a property test in
//! `src/parser.rs`.

use super::*;

/// Every observation as `name=raw@line` (with `#step` when there is one), in emission order.
fn observe(log: &str) -> Vec<String> {
    let mut auto = Auto::new(None);
    let mut got = Vec::new();
    let mut emit = |m: Match<'_>, line: u64| {
        let step = m.step.map(|s| format!("#{s}")).unwrap_or_default();
        got.push(format!("{}={}@{line}{step}", String::from_utf8_lossy(m.name), String::from_utf8_lossy(m.raw)));
    };
    for (i, line) in log.split('\n').enumerate() {
        auto.line(line.as_bytes(), i as u64 + 1, None, &mut emit);
    }
    auto.end(&mut emit);
    got
}

fn params(log: &str) -> Vec<String> {
    let mut auto = Auto::new(None);
    for (i, line) in log.split('\n').enumerate() {
        auto.line(line.as_bytes(), i as u64 + 1, None, &mut |_, _| {});
    }
    auto.params().into_iter().map(|p| format!("{}={}", p.name, p.raw)).collect()
}

#[test]
fn a_hyper_parameter_line_is_set_apart_and_the_epoch_lines_are_metrics_with_their_step() {
    let log = "lr=0.01 batch_size=64\nepoch=1 loss=0.9 acc=0.5\nepoch=2 loss=0.7 acc=0.6";
    assert_eq!(observe(log), ["loss=0.9@2#1", "loss=0.7@3#2", "acc=0.5@2#1", "acc=0.6@3#2"]);
    assert_eq!(params(log), ["lr=0.01", "batch_size=64"]);
}

#[test]
fn reprs_and_code_in_backticks_are_no_metrics() {
    let log = "Namespace(lr=0.01, epochs=3)\n  (0): Linear(in_features=784, out_features=10)\n  \
               (1): Linear(in_features=10, out_features=2)\n`Trainer.fit` stopped: `max_epochs=4` reached.";
    assert!(observe(log).is_empty());
    assert_eq!(params(log), ["lr=0.01", "epochs=3", "in_features=784", "out_features=10", "max_epochs=4"]);
}

#[test]
fn a_report_line_after_training_is_a_result_but_chatter_is_not() {
    let log = "[0]\ttrain-rmse:1.5\n[1]\ttrain-rmse:1.2\nbest_iteration=1 best_score=1.2\n\
               [LightGBM] [Warning] No further splits with positive gain, best gain: -inf\ntest accuracy: 0.95";
    assert_eq!(observe(log), ["train-rmse=1.5@1#0", "train-rmse=1.2@2#1", "test accuracy=0.95@5"]);
}

#[test]
fn keras_redraws_are_frames_even_when_backspaces_rewind_them() {
    let bar = "\r 1/3 \u{2501} 1s 10ms/step - loss: 0.9\x08\x08\x08\x08\r 2/3 \u{2501} 1s 10ms/step - loss: 0.8\x08\x08\r\
               3/3 \u{2501} 1s 10ms/step - loss: 0.7 - val_loss: 0.6";
    assert_eq!(observe(bar), ["loss=0.9@1", "loss=0.8@1", "loss=0.7@1", "val_loss=0.6@1"]);
    // A backspace and a character overwrite: what a terminal shows.
    let mut clean = Vec::new();
    clean_screen(b"0.8\x087\r\x1b[1mx\x1b[0m", &mut clean);
    assert_eq!(clean, b"0.7\rx");
}

#[test]
fn a_tqdm_bar_is_observed_once_per_count_and_value() {
    // Lightning draws each count twice: the new count with the old postfix, then the new postfix.
    let line = "\rEpoch 0:  50%| 1/2 [00:00, 9.0it/s]\rEpoch 0:  50%| 1/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0]\
                \rEpoch 0: 100%| 2/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0]\
                \rEpoch 0: 100%| 2/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0, val_loss=1.5]\
                \rEpoch 1:   0%| 0/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0, val_loss=1.5]\
                \rEpoch 1:  50%| 1/2 [00:00, 9.0it/s, v_num=0, loss_step=2.0, val_loss=1.5]\
                \rEpoch 1:  50%| 1/2 [00:00, 9.0it/s, v_num=0, loss_step=1.0, val_loss=1.5]";
    // The same value at the next count is a new per-step observation; a sticky value is observed once.
    assert_eq!(observe(line), ["loss_step=2.0@1", "loss_step=2.0@1", "val_loss=1.5@1", "loss_step=1.0@1"]);
}

#[test]
fn a_rich_frame_wrapped_over_lines_is_read_whole_and_leftovers_at_count_zero_are_not() {
    let log = "Epoch 0/1 \u{2501}\u{2501} 0/2 0:00:00 \u{2022} 0.00it/s v_num: 0.000 val_loss:\n\
               \x20                         9.99\n\
               Epoch 0/1 \u{2501}\u{2501} 2/2 0:00:00 \u{2022} 5.00it/s v_num: 0.000 loss:\n\
               \x20                         0.5 val_loss:\n\
               \x20                         0.4\n\
               done";
    assert_eq!(observe(log), ["loss=0.5@3", "val_loss=0.4@3"]);
}

#[test]
fn results_tables_and_metrics_blocks_are_read_row_by_row() {
    let log = "\u{2500}\u{2500}\u{2500}\n     Validate metric           DataLoader 0\n\u{2500}\u{2500}\u{2500}\n\
               \x20        val_acc            0.95\n\u{2500}\u{2500}\u{2500}\nafter 3\n\
               ***** train metrics *****\n  epoch                    =        3.0\n  total_flos               =        0GF\n\
               \x20 train_loss               =     0.5964\n  train_runtime            = 0:00:00.91\nbye";
    assert_eq!(observe(log), ["val_acc=0.95@4", "train_loss=0.5964@10", "train_runtime=0:00:00.91@11"]);
}

#[test]
fn dicts_and_json_lines_are_read_by_their_marks() {
    let log = "{'eta': 0.1, 'max_depth': 3}\n{'loss': 0.69, 'epoch': 0.25}";
    assert_eq!(observe(log), ["loss=0.69@2"]);
    assert_eq!(params(log), ["eta=0.1", "max_depth=3"]);
    let log = "{\"trial\": \"0\", \"global_step\": \"5\", \"acc\": \"0.5\"}\n\
               {\"trial\": \"0\", \"global_step\": \"10\", \"acc\": \"0.6\"}\n{\"global_step\": \"10\", \"val_acc\": \"0.7\"}";
    // A key first seen after training began is a result at once; a constant from the start is a parameter.
    assert_eq!(observe(log), ["acc=0.5@1#5", "acc=0.6@2#10", "val_acc=0.7@3#10"]);
    assert_eq!(params(log), ["trial=0"]);
}

#[test]
fn katib_and_sklearn_formats() {
    let log = "{metricName: accuracy, metricValue: 0.98};{metricName: loss, metricValue: 0.1}\n\
               Iteration 3, loss = 0.41\nValidation score: 0.9\n-- Epoch 2\n\
               Norm: 6.21, NNZs: 30, Bias: -0.43, T: 6390, Avg. loss: 0.0508, Objective: 0.0704\n\
               Total training time: 0.00 seconds.\nTotal training time: 0.00 seconds.";
    assert_eq!(
        observe(log),
        [
            "accuracy=0.98@1",
            "loss=0.1@1",
            "loss=0.41@2#3",
            "Validation score=0.9@3",
            "Avg. loss=0.0508@5#2",
            "Objective=0.0704@5#2"
        ]
    );
}

#[test]
fn a_binary_input_is_not_read() {
    let mut auto = Auto::new(None);
    let mut junk: Vec<u8> = (0u8..=255).cycle().take(8192).collect();
    junk.extend_from_slice(b"\nloss=0.5\nloss=0.4\n");
    let mut got = 0;
    let lines = auto.scan_block(&junk, 1, &mut |_, _| got += 1);
    assert_eq!((got, lines), (0, junk.iter().filter(|&&b| b == b'\n').count() as u64));
    assert!(auto.seen().binary_at.is_some());
}

#[test]
fn a_format_that_appears_late_is_read_then() {
    let mut log = String::new();
    for i in 0..10_000 {
        log.push_str(&format!("I0000 step {i} done\n"));
    }
    log.push_str("Accuracy at step 10000: 0.9\n");
    let got = observe(log.trim_end());
    assert_eq!(got, ["Accuracy=0.9@10001#10000"]);
}

#[test]
fn values_held_before_a_metric_context_confirmed_the_name_never_come_after_newer_ones() {
    // `loss = …` in lines no format knows is weak and held back; sklearn's `Iteration N, loss = …` then makes
    // `loss` a metric. The held values (printed without a step) stay parameters: a later weak line must not
    // release them after the newer values (found by the line-path fuzzer on a mutated scikit-learn log).
    let log = "IIteration 1, loss = 2.41\nValida loss = 2.27\nValidation score: 0.14\nIteration 3, loss = 2.16\n\
               \0Validation score: 0.20\nIteration 4, loss = 2.07\nValidation score: 0.35\nIteration 5, loss = 1.97\n\
               Validation score: 0.53Iteration 5, loss = 1.97";
    let lines: Vec<u64> = observe(log)
        .iter()
        .filter(|o| o.starts_with("loss="))
        .map(|o| o.split('@').nth(1).unwrap().split('#').next().unwrap().parse().unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "loss in the log's order: {:?}", observe(log));
}

#[test]
fn values_held_with_a_step_before_a_metric_context_confirmed_the_name_are_observed_then_in_the_logs_order() {
    // Katib's `accuracy=…` on a report line with its epoch is weak until a Keras line makes `accuracy` a metric:
    // the held value is observed then, before the Keras one; the configuration echoed before (no step) stays a
    // parameter.
    let log =
        "accuracy=0.81\nepoch 1: loss=0.44 accuracy=0.81\n12/469 [==>....] - ETA: 5s - loss: 1.91 - accuracy: 0.33\n";
    let got: Vec<String> = observe(log).into_iter().filter(|o| o.starts_with("accuracy=")).collect();
    assert_eq!(got, ["accuracy=0.81@2#1", "accuracy=0.33@3"]);
    assert!(params(log).contains(&"accuracy=0.81".to_string()), "{:?}", params(log));
}
