using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>How a conditional model is conditioned (DESIGN §9).</summary>
public sealed record ConditioningOptions
{
    /// <summary>The prompt; null: the empty prompt, which is a text-conditioned model's unconditional law.</summary>
    public string? Prompt { get; init; }

    /// <summary>Classifier-free guidance's unconditional branch; null: the empty prompt.</summary>
    public string? NegativePrompt { get; init; }

    /// <summary>
    /// Classifier-free guidance scale w: 1 (default) samples the model's conditional law p(x | prompt), which a tilt
    /// keeps exact; w ≠ 1 guides (Stable Diffusion's usual 7.5), and the guided law is no known law.
    /// </summary>
    public double GuidanceScale { get; init; } = 1;

    /// <summary>
    /// Precomputed hidden states instead of a prompt: one embedding (the prompt's), or two (the negative prompt's, then
    /// the prompt's), each [length, width]; null encodes the prompts with the model's text encoder.
    /// </summary>
    public IReadOnlyList<TextEmbedding>? EncoderHiddenStates { get; init; }

    /// <summary>True when anything asks for conditioning (a prompt, a negative prompt, hidden states or w ≠ 1).</summary>
    public bool IsSet => Prompt is not null || NegativePrompt is not null || EncoderHiddenStates is not null || GuidanceScale != 1;
}

/// <summary>A conditioned law: the denoiser samplers see, and what it was made of (for reports).</summary>
/// <param name="Denoiser">The law to sample: the network itself, <see cref="ConditionedDenoiser"/> or <see cref="ClassifierFreeGuidance"/>.</param>
/// <param name="Source">Where the hidden states came from: <c>text_encoder</c>, <c>encoder_hidden_states</c>, <c>zeros</c> or <c>none</c>.</param>
/// <param name="Prompt">The prompt's encoding when the text encoder made it.</param>
/// <param name="NegativePrompt">The negative prompt's encoding when classifier-free guidance used one from the text encoder.</param>
/// <param name="GuidanceScale">w (1 without guidance).</param>
/// <param name="NetworkCallsPerSample">UNet rows per sample and step (2 under guidance).</param>
public sealed record ConditionedLaw(IDenoiser Denoiser, string Source, PromptEncoding? Prompt, PromptEncoding? NegativePrompt, double GuidanceScale, int NetworkCallsPerSample)
{
    /// <summary>
    /// True when the law is the network's own (conditional) law, so that a tilt of it has the guarantees of DESIGN §1 (§9); false
    /// under classifier-free guidance with w ≠ 1, and for zeros fed to a conditional network without a text encoder.
    /// </summary>
    public bool IsModelLaw => Source != "zeros" && GuidanceScale == 1;

    /// <summary>One sentence on what law this is, for reports.</summary>
    public string Law => Source switch
    {
        "none" => "the network's law (an unconditional network)",
        "zeros" => "the network at zero encoder_hidden_states (no text encoder and no hidden states given): not its unconditional law, which is the empty prompt's encoding",
        _ when GuidanceScale == 1 => "p(x | c): the model's conditional law for these hidden states; a tilt of it has the guarantees of DESIGN §1 (c is part of the base law)",
        _ => $"classifier-free guidance with w = {GuidanceScale:G6}: the guided sampler's law, which is not a tilt of p(x | c) and has no known density; " +
             "an SMC tilt is consistent relative to this guided law (p = this sampler's law), never relative to p(x | c), and a shifted-evaluation tilt has no guarantee",
    };
}

/// <summary>Builds the conditioned law of a model from prompts or hidden states (DESIGN §9).</summary>
public static class PromptConditioning
{
    /// <summary>
    /// Conditions <paramref name="network"/>: prompts through <paramref name="textEncoder"/> (the empty prompt when none is
    /// given), or the given hidden states; classifier-free guidance when the scale is not 1. An unconditional network
    /// with no conditioning asked for is returned as it is.
    /// </summary>
    /// <param name="network">The UNet.</param>
    /// <param name="options">The prompts, scale or hidden states.</param>
    /// <param name="textEncoder">The model's text encoder, or null when it has none.</param>
    /// <exception cref="ConfigException">Conditioning that the network or model cannot take; the message names the parameter.</exception>
    public static ConditionedLaw Create(IConditionalDenoiser network, ConditioningOptions options, TextEncoder? textEncoder)
    {
        double w = options.GuidanceScale;
        if (!double.IsFinite(w)) throw ConfigException.For("guidanceScale", $"{w}: expected a finite number");
        if (w == 1 && (options.NegativePrompt is not null || options.EncoderHiddenStates is { Count: 2 }))
            throw ConfigException.For(options.NegativePrompt is not null ? "negativePrompt" : "encoderHiddenStates",
                                      $": the negative prompt is classifier-free guidance's unconditional branch, which runs only with {OnnxAlignException.Option("guidanceScale")} ≠ 1");
        if (network.ConditioningShape is null)
        {
            if (options.IsSet)
                throw ConfigException.For(options.EncoderHiddenStates is not null ? "encoderHiddenStates" : options.Prompt is not null ? "prompt" : "guidanceScale",
                                          ": the network takes no encoder_hidden_states (an unconditional model): prompts and guidance do not apply");
            return new ConditionedLaw(network, "none", null, null, 1, 1);
        }
        if (options.EncoderHiddenStates is { } given)
        {
            if (options.Prompt is not null || options.NegativePrompt is not null)
                throw ConfigException.For("encoderHiddenStates", $": give prompts or hidden states, not both ({OnnxAlignException.Option("prompt")} / {OnnxAlignException.Option("negativePrompt")})");
            if (given.Count is not (1 or 2))
                throw ConfigException.For("encoderHiddenStates", $": {given.Count} embeddings; expected 1 (the prompt's) or 2 (the negative prompt's, then the prompt's)");
            foreach (var embedding in given) embedding.CheckFits(network, parameter: "encoderHiddenStates");
            var positive = given[^1];
            if (w == 1) return new ConditionedLaw(new ConditionedDenoiser(network, positive), "encoder_hidden_states", null, null, 1, 1);
            TextEmbedding negative;
            PromptEncoding? negativeEncoding = null;
            if (given.Count == 2) negative = given[0];
            else if (textEncoder is not null) negative = (negativeEncoding = textEncoder.Encode("")).Embedding;
            else throw ConfigException.For("encoderHiddenStates", $": guidance ({OnnxAlignException.Option("guidanceScale")} {w:G6}) needs the unconditional hidden states too and the model has no text encoder to make them: give [2, length, width] (negative, then prompt)");
            return Guided(network, negative, positive, w, "encoder_hidden_states", null, negativeEncoding);
        }
        if (textEncoder is null)
        {
            if (options.Prompt is not null || options.NegativePrompt is not null || w != 1)
                throw ConfigException.For(options.Prompt is not null ? "prompt" : options.NegativePrompt is not null ? "negativePrompt" : "guidanceScale",
                                          $": the model has no text encoder (text_encoder/model.onnx with tokenizer/); give the hidden states ({OnnxAlignException.Option("encoderHiddenStates")})");
            if (network.ConditioningShape is not { Length: not null, Width: not null })
                throw ConfigException.For("encoderHiddenStates", ": the network's encoder_hidden_states has dynamic dimensions and the model has no text encoder: give the hidden states");
            return new ConditionedLaw(network, "zeros", null, null, 1, 1);
        }
        var prompt = textEncoder.Encode(options.Prompt ?? "");
        if (w == 1) return new ConditionedLaw(new ConditionedDenoiser(network, prompt.Embedding), "text_encoder", prompt, null, 1, 1);
        var negativePrompt = textEncoder.Encode(options.NegativePrompt ?? "");
        return Guided(network, negativePrompt.Embedding, prompt.Embedding, w, "text_encoder", prompt, negativePrompt);
    }

    private static ConditionedLaw Guided(IConditionalDenoiser network, TextEmbedding negative, TextEmbedding positive, double w, string source,
                                         PromptEncoding? prompt, PromptEncoding? negativePrompt)
    {
        var guidance = new ClassifierFreeGuidance(network, negative, positive, w);
        return new ConditionedLaw(guidance, source, prompt, negativePrompt, w, guidance.NetworkCallsPerSample);
    }
}
