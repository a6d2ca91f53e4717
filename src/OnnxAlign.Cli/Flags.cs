using System.Text.RegularExpressions;
using OnnxAlign.Core;

namespace OnnxAlign.Cli;

/// <summary>
/// The library names the parameter at fault (<see cref="OnnxAlignException.Parameter"/>) and the options a remedy
/// needs (<see cref="OnnxAlignException.Option"/>); the CLI says them as its flags.
/// </summary>
internal static partial class Flags
{
    private static readonly Dictionary<string, string> FlagOfParameter = new()
    {
        ["reward"] = "--reward",
        ["constraint"] = "--constraint",
        ["objective"] = "--objective",
        ["preferences"] = "--preferences",
        ["beta"] = "--beta",
        ["l2"] = "--l2",
        ["lambda"] = "--lambda",
        ["theta"] = "--tilt",
        ["target"] = "--lambda",
        ["ConstrainedSettings.SamplesPerIteration"] = "--samples-per-iteration",
        ["DualAveragingSettings.SamplesPerIteration"] = "--samples-per-iteration",
        ["mode"] = "--tilt-mode",
        ["shard"] = "--shard",
        ["plan"] = "--plan",
        ["shardCount"] = "--shards",
        ["shards"] = "merge",
        ["resume"] = "--resume",
        ["overwrite"] = "--overwrite",
        ["outputDirectory"] = "--out",
        ["DenoiserOptions.Device"] = "--device",
        ["DenoiserOptions.SampleShape"] = "--shape",
        ["GenerationRequest.InitialNoise"] = "--init-noise",
        ["GenerationRequest.Checkpoint"] = "--resume",
        ["GenerationRequest.OnNonFinite"] = "--on-nan",
        ["SmcSettings.ParticlesPerSystem"] = "--particles",
        ["ExactTiltSettings.MaxParticlesPerSample"] = "--max-particles-per-sample",
        ["KlAlignmentSettings.Mode"] = "--tilt-mode",
        ["sampler"] = "--sampler",
        ["evaluator"] = "--evaluator",
        ["referenceImages"] = "quality --write-reference",
        ["form"] = "--form",
        ["samples"] = "--samples",
        ["directions"] = "--features",
        ["prompt"] = "--prompt",
        ["negativePrompt"] = "--negative-prompt",
        ["guidanceScale"] = "--guidance-scale",
        ["encoderHiddenStates"] = "--encoder-hidden-states",
        ["conditioning"] = "--prompt",
        ["BlackBoxBenchmarkSettings.Lambdas"] = "--lambdas",
        ["BlackBoxBenchmarkSettings.Steps"] = "--steps",
        ["BlackBoxBenchmarkSettings.Particles"] = "--particles",
        ["BlackBoxBenchmarkSettings.ReferenceCount"] = "--reference",
    };

    /// <summary>The flag of a library parameter, or null when the CLI has none for it.</summary>
    public static string? Of(string parameter) => FlagOfParameter.GetValueOrDefault(parameter);

    /// <summary>The exception's message in the CLI's words: its parameter and the options it names said as flags.</summary>
    public static string Describe(OnnxAlignException e)
    {
        string text = e.Message;
        if (e.Parameter is { } parameter && Of(parameter) is { } flag && text.StartsWith(parameter, StringComparison.Ordinal))
            text = flag + text[parameter.Length..];
        return Describe(text);
    }

    /// <summary>A library text (a message, a warning) with the options it names said as flags.</summary>
    public static string Describe(string text) => OptionReference().Replace(text, m => Of(m.Groups[1].Value) ?? m.Value);

    [GeneratedRegex(@"option '([\w.]+)'")]
    private static partial Regex OptionReference();
}
