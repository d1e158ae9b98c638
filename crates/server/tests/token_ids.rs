//! Prompts as token ids, on a model with a tokenizer and on random-weight models without one
//! (answers as `token_ids`); text sent to a model without a tokenizer is a 400, and the server
//! keeps serving.

mod harness;

use harness::*;
use minference_engine::{cpu_engine, generate, AttentionChoice, GenerateOptions, PrefillEngine, Sampler};
use minference_model::{Model, ModelConfig};
use minference_server::{EngineFactory, ServedModel, Server};
use serde_json::{json, Value};
use std::sync::Arc;

fn completion(prompt: Value, max_tokens: usize) -> Value {
    json!({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

fn engines_over(model: &Arc<Model>, slots: usize) -> EngineFactory {
    let model = Arc::clone(model);
    Box::new(move || {
        Ok((0..slots).map(|_| Box::new(cpu_engine(Arc::clone(&model))) as Box<dyn PrefillEngine>).collect())
    })
}

/// The greedy answer of `model` to `prompt` run through the engine directly.
fn direct_answer(model: &Arc<Model>, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut engine = cpu_engine(Arc::clone(model));
    let opts = GenerateOptions { max_new_tokens: max_tokens, sampler: Sampler::greedy(), stop_tokens: Vec::new() };
    let run = generate(&mut engine, prompt, &AttentionChoice::Dense, &opts, &mut |_| {}, &mut |_| true);
    run.unwrap_or_else(|e| panic!("{e}")).tokens
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_id_prompts_on_a_model_with_a_tokenizer() {
    let base = start(config(), 1, Hooks::default()).await;
    let c = client();
    let comp = format!("{base}/v1/completions");
    let vocab = tiny_model().config().vocab as i64;

    // Ids and the same ids as a one-element batch give the same greedy text, with no token_ids.
    let (s, v) = post(&c, &comp, &completion(json!([1, 2, 3, 4]), 6)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["prompt_tokens"], 4, "{v}");
    assert!(v["choices"][0].get("token_ids").is_none(), "{v}");
    let (s, w) = post(&c, &comp, &completion(json!([[1, 2, 3, 4]]), 6)).await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(v["choices"][0]["text"], w["choices"][0]["text"]);

    for bad in [json!([1, vocab]), json!([-1, 2]), json!([1, 1u64 << 40])] {
        let (s, e) = post(&c, &comp, &completion(bad.clone(), 4)).await;
        assert_eq!((s, error_code(&e)), (400, "invalid_value"), "{bad}: {e}");
        assert_eq!(e["error"]["param"], "prompt", "{e}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("outside the vocabulary")), "{e}");
    }
    let (s, e) = post(&c, &comp, &completion(json!([]), 4)).await;
    assert_eq!((s, error_code(&e)), (400, "invalid_value"), "{e}");
    let (s, e) = post(&c, &comp, &completion(json!([[1], [2]]), 4)).await;
    assert_eq!((s, error_code(&e)), (400, "invalid_value"), "{e}");
    let (s, e) = post(&c, &comp, &completion(json!([1.5]), 4)).await;
    assert_eq!((s, error_code(&e)), (400, "invalid_request_body"), "{e}");

    // Still serving.
    let (s, v) = post(&c, &comp, &completion(json!([5, 6]), 2)).await;
    assert_eq!(s, 200, "{v}");
}

/// A random-weight model (no tokenizer), served as a host model or as its config alone (how the
/// GPU's device-generated weights are served).
async fn tokenizer_less(served: ServedModel, model: &Arc<Model>) {
    let server = Server::start(served, config(), engines_over(model, 2)).unwrap_or_else(|e| panic!("{e}"));
    let base = spawn(server).await;
    let c = client();
    let comp = format!("{base}/v1/completions");
    let prompt = [3u32, 1, 4, 1, 5, 9, 2, 6];

    let (s, v) = post(&c, &comp, &completion(json!(prompt), 8)).await;
    assert_eq!(s, 200, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], "", "{v}");
    let ids = ids_of(&choice["token_ids"]);
    assert_eq!(ids.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap_or(0), "{v}");
    assert_eq!(ids, direct_answer(model, &prompt, 8), "the server's greedy ids = the engine's");
    assert_eq!(choice["finish_reason"], "length", "{v}");

    // Streamed: one id per chunk, the same ids.
    let mut body = completion(json!(prompt), 8);
    body["stream"] = json!(true);
    let r = c.post(&comp).json(&body).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    let (events, _) = sse(r, None).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let streamed: Vec<u32> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .flat_map(|v| ids_of(&v["choices"][0]["token_ids"]))
        .collect();
    assert_eq!(streamed, ids, "{events:?}");

    // Text is refused with a clear 400, chat too, and stop strings (there is no text to match).
    let (s, e) = post(&c, &comp, &completion(json!("hello"), 4)).await;
    assert_eq!((s, error_code(&e)), (400, "no_tokenizer"), "{e}");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("no tokenizer") && msg.contains("token ids"), "{msg}");
    let (s, e) = post(&c, &format!("{base}/v1/chat/completions"), &chat_body("hello", 4)).await;
    assert_eq!((s, error_code(&e)), (400, "no_tokenizer"), "{e}");
    let mut stop = completion(json!(prompt), 4);
    stop["stop"] = json!(["x"]);
    let (s, e) = post(&c, &comp, &stop).await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("stop")), "{e}");
    let vocab = model.config().vocab;
    let (s, e) = post(&c, &comp, &completion(json!([vocab]), 4)).await;
    assert_eq!((s, error_code(&e)), (400, "invalid_value"), "{e}");

    // Still serving, and no request counted as an engine failure.
    let (s, v) = post(&c, &comp, &completion(json!([7, 7, 7]), 3)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(get(&c, &format!("{base}/health")).await.0, 200);
    let (_, metrics) = get(&c, &format!("{base}/metrics")).await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_weight_models_take_and_return_token_ids() {
    let model = Arc::new(Model::random_with_config(ModelConfig::tiny_llama(true), 3).unwrap_or_else(|e| panic!("{e}")));
    assert!(model.tokenizer().is_err(), "random weights have no tokenizer");
    tokenizer_less(ServedModel::Loaded(Arc::clone(&model)), &model).await;
    tokenizer_less(ServedModel::Config(model.config().clone()), &model).await;
}
