"""The transformers rows of scripts/zoo_audit.py: (label, builder) pairs, each a small configuration of one
architecture, built seeded with nothing downloaded; idinit.inputs builds their inputs from the config."""
from __future__ import annotations


def _hf(kind: str, cls: str, **config):
    def build():
        import transformers

        return getattr(transformers, cls)(transformers.AutoConfig.for_model(kind, **config))
    return build


_TEXT = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100,
             max_position_embeddings=64)
_DECODER = dict(_TEXT, num_key_value_heads=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_VISION = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8, num_labels=3)
_SEQ2SEQ = dict(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
_AUDIO = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=32,
              conv_dim=[16, 16], conv_stride=[5, 2], conv_kernel=[10, 3], num_conv_pos_embeddings=16,
              num_conv_pos_embedding_groups=4, apply_spec_augment=False, layerdrop=0.0)


# (label, builder): transformers architectures the tests do not cover (tests/test_plan_classes.py has
# BERT, GPT-2, T5, Llama, OPT, BART, Mistral, Qwen2, CLIP, Whisper, Phi, GPT-J, GPT-NeoX, Falcon, Mamba); their
# inputs are the ones idinit.inputs builds from the config (token ids, pixel values, audio)
HF: list[tuple[str, object]] = [
    ("hf:roberta", _hf("roberta", "RobertaForSequenceClassification", **_TEXT, num_labels=3)),
    ("hf:distilbert", _hf("distilbert", "DistilBertForSequenceClassification", n_layers=2, dim=32, n_heads=2,
                          hidden_dim=64, vocab_size=100, max_position_embeddings=64, num_labels=3)),
    ("hf:albert", _hf("albert", "AlbertForMaskedLM", num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                      intermediate_size=64, embedding_size=16, vocab_size=100, max_position_embeddings=64)),
    ("hf:electra", _hf("electra", "ElectraForPreTraining", **_TEXT, embedding_size=16)),
    ("hf:deberta-v2", _hf("deberta-v2", "DebertaV2ForSequenceClassification", **_TEXT, num_labels=3)),
    ("hf:gpt_neo", _hf("gpt_neo", "GPTNeoForCausalLM", num_layers=2, hidden_size=32, num_heads=2, vocab_size=100,
                       max_position_embeddings=64, attention_types=[[["global", "local"], 1]], window_size=8)),
    ("hf:bloom", _hf("bloom", "BloomForCausalLM", n_layer=2, hidden_size=32, n_head=2, vocab_size=100)),
    ("hf:gemma2", _hf("gemma2", "Gemma2ForCausalLM", **_DECODER, head_dim=16)),
    ("hf:qwen3", _hf("qwen3", "Qwen3ForCausalLM", **_DECODER, head_dim=16)),
    ("hf:phi3", _hf("phi3", "Phi3ForCausalLM", **_DECODER)),
    ("hf:mixtral", _hf("mixtral", "MixtralForCausalLM", **_DECODER, num_local_experts=4, num_experts_per_tok=2)),
    ("hf:olmo2", _hf("olmo2", "Olmo2ForCausalLM", **_DECODER)),
    ("hf:stablelm", _hf("stablelm", "StableLmForCausalLM", **_DECODER)),
    ("hf:vit", _hf("vit", "ViTForImageClassification", **_VISION)),
    ("hf:convnext", _hf("convnext", "ConvNextForImageClassification", hidden_sizes=[8, 16], depths=[1, 1],
                        num_stages=2, image_size=32, num_labels=3)),
    ("hf:swin", _hf("swin", "SwinForImageClassification", image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                    num_heads=[2, 2], window_size=4, num_labels=3)),
    # second round (2026-11-30): encoder-decoders
    ("hf:pegasus", _hf("pegasus", "PegasusForConditionalGeneration", **_SEQ2SEQ)),
    ("hf:marian", _hf("marian", "MarianMTModel", **_SEQ2SEQ, pad_token_id=99, decoder_start_token_id=99)),
    ("hf:m2m_100", _hf("m2m_100", "M2M100ForConditionalGeneration", **_SEQ2SEQ, encoder_layerdrop=0.0,
                       decoder_layerdrop=0.0)),
    ("hf:led", _hf("led", "LEDForConditionalGeneration", **{k: v for k, v in _SEQ2SEQ.items() if k != "max_position_embeddings"},
                   max_encoder_position_embeddings=64, max_decoder_position_embeddings=64, attention_window=[8, 8])),
    ("hf:switch_transformers", _hf("switch_transformers", "SwitchTransformersForConditionalGeneration", vocab_size=100,
                                   d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                                   num_experts=4, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
                                   expert_capacity=8, decoder_start_token_id=0)),
    # other encoders
    ("hf:deberta", _hf("deberta", "DebertaForSequenceClassification", **_TEXT, num_labels=3, relative_attention=True,
                       pos_att_type=["c2p", "p2c"])),
    ("hf:mpnet", _hf("mpnet", "MPNetForMaskedLM", **_TEXT)),
    ("hf:convbert", _hf("convbert", "ConvBertForSequenceClassification", **_TEXT, embedding_size=32, num_labels=3)),
    ("hf:fnet", _hf("fnet", "FNetForSequenceClassification", **{k: v for k, v in _TEXT.items() if k != "num_attention_heads"},
                    num_labels=3)),
    ("hf:xlnet", _hf("xlnet", "XLNetLMHeadModel", n_layer=2, d_model=32, n_head=2, d_inner=64, vocab_size=100)),
    ("hf:funnel", _hf("funnel", "FunnelForSequenceClassification", block_sizes=[1, 1], num_decoder_layers=1, d_model=32,
                      n_head=2, d_head=16, d_inner=64, vocab_size=100, num_labels=3)),
    ("hf:mobilebert", _hf("mobilebert", "MobileBertForSequenceClassification", **_TEXT, embedding_size=16,
                          intra_bottleneck_size=16, num_feedforward_networks=2, num_labels=3)),
    # speech: raw waveform (wav2vec2, HuBERT), filter-bank frames (Speech2Text)
    ("hf:wav2vec2", _hf("wav2vec2", "Wav2Vec2ForCTC", **_AUDIO)),
    ("hf:hubert", _hf("hubert", "HubertForSequenceClassification", **_AUDIO, num_labels=3)),
    ("hf:speech_to_text", _hf("speech_to_text", "Speech2TextForConditionalGeneration",
                              **{k: v for k, v in _SEQ2SEQ.items() if k != "max_position_embeddings"},
                              max_source_positions=64, max_target_positions=64, conv_channels=16,
                              input_feat_per_channel=8, num_conv_layers=2)),
    # decoders
    ("hf:gemma3_text", _hf("gemma3_text", "Gemma3ForCausalLM", **_DECODER, head_dim=16, sliding_window=8,
                           query_pre_attn_scalar=16)),
    ("hf:cohere", _hf("cohere", "CohereForCausalLM", **_DECODER)),
    ("hf:starcoder2", _hf("starcoder2", "Starcoder2ForCausalLM", **_DECODER)),
    ("hf:granitemoe", _hf("granitemoe", "GraniteMoeForCausalLM", **_DECODER, num_local_experts=4,
                          num_experts_per_tok=2, residual_multiplier=0.5, embedding_multiplier=2.0)),
    ("hf:jamba", _hf("jamba", "JambaForCausalLM", **_DECODER, num_experts=4, expert_layer_period=2,
                     expert_layer_offset=1, attn_layer_period=2, attn_layer_offset=1,
                     mamba_d_state=4)),
    ("hf:rwkv", _hf("rwkv", "RwkvForCausalLM", num_hidden_layers=2, hidden_size=32, vocab_size=100, context_length=64)),
    ("hf:recurrent_gemma", _hf("recurrent_gemma", "RecurrentGemmaForCausalLM", **_DECODER, attention_window_size=8,
                               block_types=["recurrent", "attention"])),
    ("hf:mpt", _hf("mpt", "MptForCausalLM", n_layers=2, d_model=32, n_heads=2, vocab_size=100, max_seq_len=64)),
    ("hf:nemotron", _hf("nemotron", "NemotronForCausalLM", **_DECODER)),
    ("hf:olmoe", _hf("olmoe", "OlmoeForCausalLM", **_DECODER, num_experts=4, num_experts_per_tok=2)),
    ("hf:dbrx", _hf("dbrx", "DbrxForCausalLM", d_model=32, n_heads=2, n_layers=2, max_seq_len=64, vocab_size=100,
                    attn_config={"kv_n_heads": 1, "rope_theta": 10000.0, "clip_qkv": 8.0}, ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4,
                                                                "moe_top_k": 2})),
    # Zamba: one transformer block shared by its hybrid layers (tied weights), each with its own adapter
    ("hf:zamba", _hf("zamba", "ZambaForCausalLM", **{**_DECODER, "num_hidden_layers": 4}, n_mamba_heads=2,
                     mamba_d_state=4, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"])),
    ("hf:falcon_h1", _hf("falcon_h1", "FalconH1ForCausalLM", **_DECODER, mamba_d_ssm=64, mamba_n_heads=4,
                         mamba_d_head=16, mamba_d_state=8, mamba_chunk_size=8)),
    # vision
    ("hf:dinov2", _hf("dinov2", "Dinov2ForImageClassification", **{k: v for k, v in _VISION.items() if k != "intermediate_size"},
                      layerscale_value=1e-5)),
    ("hf:beit", _hf("beit", "BeitForImageClassification", **_VISION, use_relative_position_bias=True)),
    ("hf:segformer", _hf("segformer", "SegformerForSemanticSegmentation", num_encoder_blocks=2, depths=[1, 1],
                         sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 2], decoder_hidden_size=16,
                         image_size=32, num_labels=3)),
    ("hf:mobilevit", _hf("mobilevit", "MobileViTForImageClassification", image_size=64, hidden_sizes=[16, 24, 32],
                         neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 64], num_labels=3)),
    ("hf:resnet", _hf("resnet", "ResNetForImageClassification", embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                      layer_type="basic", image_size=32, num_labels=3)),
    ("hf:swinv2", _hf("swinv2", "Swinv2ForImageClassification", image_size=32, patch_size=4, embed_dim=16,
                      depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3)),
    ("hf:siglip_vision", _hf("siglip_vision_model", "SiglipVisionModel", **_VISION)),
    # fourth round (2026-11-30): structures no earlier row has. State-space and recurrent mixers: Mamba-2 (SSD
    # scan, gated norm), xLSTM (mLSTM), LFM2 (gated short convolutions), Qwen3-Next (gated delta rule, gated
    # attention, MoE with a gated shared expert), MiniMax (lightning attention); MLA + routed / shared experts
    # (DeepSeek-V3); AltUp + LAuReL + per-layer inputs (Gemma3n); post-norms (GLM-4, T5Gemma)
    ("hf:mamba2", _hf("mamba2", "Mamba2ForCausalLM", num_hidden_layers=2, hidden_size=32, vocab_size=100, state_size=8,
                      num_heads=4, head_dim=16, n_groups=1, expand=2, chunk_size=8)),
    ("hf:xlstm", _hf("xlstm", "xLSTMForCausalLM", num_hidden_layers=2, hidden_size=32, num_heads=2, vocab_size=100,
                     ffn_round_up_to_multiple_of=8, autocast_kernel_dtype="float32")),
    ("hf:lfm2", _hf("lfm2", "Lfm2ForCausalLM", **_DECODER, layer_types=["conv", "full_attention"],
                    block_auto_adjust_ff_dim=False)),
    ("hf:qwen3_next", _hf("qwen3_next", "Qwen3NextForCausalLM", **_DECODER, head_dim=16,
                          layer_types=["linear_attention", "full_attention"], linear_num_value_heads=2,
                          linear_num_key_heads=1, linear_key_head_dim=16, linear_value_head_dim=16,
                          linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                          shared_expert_intermediate_size=32, decoder_sparse_step=1)),
    ("hf:minimax", _hf("minimax", "MiniMaxForCausalLM", **_DECODER, head_dim=16,
                       layer_types=["linear_attention", "full_attention"], num_local_experts=4, num_experts_per_tok=2,
                       block_size=4)),
    ("hf:deepseek_v3", _hf("deepseek_v3", "DeepseekV3ForCausalLM", **_DECODER, q_lora_rank=16, kv_lora_rank=16,
                           qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, n_routed_experts=4,
                           num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1,
                           n_group=2, topk_group=1)),
    ("hf:gemma3n", _hf("gemma3n_text", "Gemma3nForCausalLM", **_DECODER, head_dim=16, altup_num_inputs=2, laurel_rank=8,
                       hidden_size_per_layer_input=8, vocab_size_per_layer_input=100, num_kv_shared_layers=0,
                       activation_sparsity_pattern=[0.0, 0.0], layer_types=["sliding_attention", "full_attention"],
                       sliding_window=8)),
    ("hf:glm4", _hf("glm4", "Glm4ForCausalLM", **_DECODER, head_dim=16)),
    ("hf:persimmon", _hf("persimmon", "PersimmonForCausalLM", **_TEXT, qk_layernorm=True, partial_rotary_factor=0.5)),
    ("hf:t5gemma", _hf("t5gemma", "T5GemmaForConditionalGeneration", encoder=dict(_DECODER, head_dim=16),
                       decoder=dict(_DECODER, head_dim=16), vocab_size=100)),
    # encoders: fused Wqkv + GLU and local / global layers (ModernBERT), reversible blocks run in one custom
    # autograd.Function (Reformer), rotary protein LM (ESM), character downsampling (CANINE), latent
    # cross-attention (Perceiver)
    ("hf:modernbert", _hf("modernbert", "ModernBertForMaskedLM", **{**_TEXT, "num_hidden_layers": 3}, local_attention=8,
                          global_attn_every_n_layers=2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          cls_token_id=1, sep_token_id=2)),
    ("hf:reformer", _hf("reformer", "ReformerForMaskedLM", attn_layers=["local", "lsh"], hidden_size=32,
                        num_attention_heads=2, attention_head_size=16, feed_forward_size=64, vocab_size=100,
                        axial_pos_embds=False, max_position_embeddings=64, local_attn_chunk_length=5,
                        lsh_attn_chunk_length=5, num_buckets=2, num_hashes=1, is_decoder=False)),
    ("hf:esm", _hf("esm", "EsmForMaskedLM", **_TEXT, pad_token_id=1, position_embedding_type="rotary")),
    ("hf:canine", _hf("canine", "CanineForSequenceClassification", num_hidden_layers=2, hidden_size=32,
                      num_attention_heads=2, intermediate_size=64, num_hash_functions=4, num_hash_buckets=64,
                      downsampling_rate=2, upsampling_kernel_size=3, local_transformer_stride=4, num_labels=3)),
    ("hf:perceiver", _hf("perceiver", "PerceiverForMaskedLM", num_latents=8, d_latents=32, d_model=32, num_blocks=1,
                         num_self_attends_per_block=2, num_self_attention_heads=2, num_cross_attention_heads=2,
                         vocab_size=100, max_position_embeddings=64)),
    # vision: weight-standardised pre-activation ResNet (BiT), layer scale + registers + gated MLP (DINOv3),
    # detection with object queries (DETR, ResNet backbone, image_size only sizes the example batch), a
    # multi-scale fusion neck (DPT), super-resolution (Swin2SR), SAM's prompt / two-way mask decoder
    ("hf:bit", _hf("bit", "BitForImageClassification", embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1],
                   layer_type="preactivation", num_groups=4, image_size=32, num_labels=3)),
    ("hf:dinov3_vit", _hf("dinov3_vit", "DINOv3ViTModel", **{k: v for k, v in _VISION.items() if k != "num_labels"},
                          layerscale_value=1e-5, num_register_tokens=2, use_gated_mlp=True)),
    ("hf:detr", _hf("detr", "DetrForObjectDetection", use_timm_backbone=False, use_pretrained_backbone=False,
                    backbone_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 32],
                                     "depths": [1, 1, 1, 1], "layer_type": "basic", "out_features": ["stage4"]},
                    d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8, image_size=64,
                    num_labels=3)),
    ("hf:dpt", _hf("dpt", "DPTForDepthEstimation", **{**_VISION, "num_hidden_layers": 4},
                   backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
                   reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1)),
    ("hf:swin2sr", _hf("swin2sr", "Swin2SRForImageSuperResolution", image_size=16, patch_size=1, embed_dim=16,
                       depths=[1, 1], num_heads=[2, 2], window_size=4, upscale=2)),
    ("hf:sam", _hf("sam", "SamModel", vision_config=dict(hidden_size=32, output_channels=16, num_hidden_layers=2,
                                                         num_attention_heads=2, mlp_dim=64, image_size=64, patch_size=8,
                                                         window_size=2, global_attn_indexes=[1], num_pos_feats=8),
                   prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
                   mask_decoder_config=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32,
                                            iou_head_hidden_dim=16))),
]
