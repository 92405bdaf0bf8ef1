//! The one map between model parameters and safetensors keys, walked by import and export.
//!
//! Shared parts keep the Hugging Face Qwen2 keys; expert and router keys are ours
//! (docs/FORMAT.md). burn stores Linear weights `[in, out]`, the files `[out, in]`.

use burn::module::Param;
use burn::tensor::{Tensor, backend::Backend};
use multipl_moe_core::CausalLm;
use multipl_moe_core::attention::Attention;
use multipl_moe_core::decoder::FeedForward;
use multipl_moe_core::experts::ExpertBank;
use multipl_moe_core::ffn::SwiGlu;
use multipl_moe_core::norm::RmsNorm;

use crate::error::Result;

/// How a parameter is laid out in the file relative to burn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and order (embeddings, norms, biases).
    Same,
    /// A Linear weight: burn `[in, out]`, file `[out, in]`.
    Transposed,
}

/// Called for every parameter of a model, with its key.
pub trait ParamVisitor<B: Backend> {
    /// A plain tensor parameter.
    fn tensor<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<()>;

    /// A bank of SwiGLU experts; expert `i` lives under `{prefix}.{i}.{gate,up,down}_proj.weight`.
    fn bank(&mut self, prefix: &str, bank: &mut ExpertBank<B>) -> Result<()>;
}

/// Visits every parameter of `model` with its safetensors key.
pub fn walk<B: Backend, V: ParamVisitor<B>>(model: &mut CausalLm<B>, v: &mut V) -> Result<()> {
    v.tensor(
        "model.embed_tokens.weight",
        &mut model.embed_tokens.weight,
        Layout::Same,
    )?;
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        attention(v, &format!("{p}.self_attn"), &mut layer.self_attn)?;
        norm(
            v,
            &format!("{p}.input_layernorm"),
            &mut layer.input_layernorm,
        )?;
        norm(
            v,
            &format!("{p}.post_attention_layernorm"),
            &mut layer.post_attention_layernorm,
        )?;
        let mlp = format!("{p}.mlp");
        match &mut layer.mlp {
            FeedForward::Dense(ffn) => swiglu(v, &mlp, ffn)?,
            FeedForward::Hybrid(moe) => {
                let tok = &mut moe.token_moe;
                swiglu(v, &format!("{mlp}.shared_expert"), &mut tok.shared_expert)?;
                v.tensor(
                    &format!("{mlp}.token_router.weight"),
                    &mut tok.router.weight,
                    Layout::Transposed,
                )?;
                v.bank(&format!("{mlp}.token_experts"), &mut tok.experts)?;
                let seg = &mut moe.segment_moe;
                v.tensor(
                    &format!("{mlp}.segment_router.weight"),
                    &mut seg.router.weight,
                    Layout::Transposed,
                )?;
                v.bank(&format!("{mlp}.segment_experts"), &mut seg.experts)?;
            }
        }
    }
    norm(v, "model.norm", &mut model.norm)?;
    if let Some(head) = &mut model.lm_head {
        v.tensor("lm_head.weight", &mut head.weight, Layout::Transposed)?;
    }
    Ok(())
}

fn norm<B: Backend, V: ParamVisitor<B>>(v: &mut V, p: &str, n: &mut RmsNorm<B>) -> Result<()> {
    v.tensor(&format!("{p}.weight"), &mut n.weight, Layout::Same)
}

fn swiglu<B: Backend, V: ParamVisitor<B>>(v: &mut V, p: &str, f: &mut SwiGlu<B>) -> Result<()> {
    for (name, lin) in [
        ("gate_proj", &mut f.gate_proj),
        ("up_proj", &mut f.up_proj),
        ("down_proj", &mut f.down_proj),
    ] {
        v.tensor(
            &format!("{p}.{name}.weight"),
            &mut lin.weight,
            Layout::Transposed,
        )?;
    }
    Ok(())
}

fn attention<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    p: &str,
    a: &mut Attention<B>,
) -> Result<()> {
    for (name, lin) in [
        ("q_proj", &mut a.q_proj),
        ("k_proj", &mut a.k_proj),
        ("v_proj", &mut a.v_proj),
        ("o_proj", &mut a.o_proj),
    ] {
        v.tensor(
            &format!("{p}.{name}.weight"),
            &mut lin.weight,
            Layout::Transposed,
        )?;
        if let Some(bias) = &mut lin.bias {
            v.tensor(&format!("{p}.{name}.bias"), bias, Layout::Same)?;
        }
    }
    Ok(())
}
