using System.CommandLine;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;

namespace OnnxAlign.Cli;

/// <summary>--prompt, --negative-prompt, --guidance-scale, --encoder-hidden-states: the conditioning of a Stable-Diffusion-shaped model (DESIGN §9).</summary>
internal sealed class PromptOptions
{
    private readonly Option<string?> _prompt = new("--prompt") { Description = "Text prompt of a model with a text encoder (default: the empty prompt, its unconditional law)." };
    private readonly Option<string?> _negative = new("--negative-prompt") { Description = "Classifier-free guidance's unconditional branch (default: the empty prompt); needs --guidance-scale ≠ 1." };
    private readonly Option<double> _scale = new("--guidance-scale") { Description = "Classifier-free guidance scale w (1 = the model's conditional law, which tilts keep exact; SD's usual 7.5 guides, and the guided law is not exact).", DefaultValueFactory = _ => 1.0 };
    private readonly Option<string?> _hidden = new("--encoder-hidden-states") { Description = "Precomputed hidden states .npy instead of a prompt: [L, D] or [1, L, D] (the prompt's), or [2, L, D] (negative, then prompt)." };

    public IEnumerable<Option> All => [_prompt, _negative, _scale, _hidden];

    /// <summary>The conditioning these flags ask for; the hidden-state file is read and checked here.</summary>
    public ConditioningOptions Read(ParseResult parse)
    {
        double w = parse.GetValue(_scale);
        if (!double.IsFinite(w)) throw new UsageException($"--guidance-scale {w}: expected a finite number");
        IReadOnlyList<TextEmbedding>? hidden = parse.GetValue(_hidden) is { } path
            ? TextEmbedding.FromArray(NpyFile.Read(path), "encoderHiddenStates")
            : null;
        return new ConditioningOptions
        {
            Prompt = parse.GetValue(_prompt),
            NegativePrompt = parse.GetValue(_negative),
            GuidanceScale = w,
            EncoderHiddenStates = hidden,
        };
    }
}
