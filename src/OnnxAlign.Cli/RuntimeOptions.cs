using System.CommandLine;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>Where and how the network runs: the options shared by every command that opens a model.</summary>
internal sealed class RuntimeOptions
{
    /// <summary>The one default batch of every command that samples: on the throughput plateau (README, Performance).</summary>
    public const int DefaultBatch = 64;

    /// <summary>--batch, the same for every command that samples.</summary>
    public static Option<int> Batch() => new("--batch") { Description = $"Samples per network call (default {DefaultBatch}; the output does not depend on it).", DefaultValueFactory = _ => DefaultBatch };

    /// <summary>--resume, the same for every command whose job keeps a checkpoint; <paramref name="kept"/> says what is kept.</summary>
    public static Option<bool> Resume(string kept) => new("--resume") { Description = $"Continue an interrupted run in --out (same options); {kept} kept in OUT/.partial/." };

    /// <summary>--on-nan, the same for every command that samples (its NaN policy; <see cref="NanPolicy"/> reads it).</summary>
    public static Option<string> OnNan() => new("--on-nan")
    {
        Description = "When a sample turns NaN/±∞: stop (keep the finished samples, exit 3) or skip (drop it, go on).", DefaultValueFactory = _ => "stop",
    };

    /// <summary>The policy an --on-nan value names.</summary>
    public static NonFinitePolicy NanPolicy(string? value) => value switch
    {
        "stop" => NonFinitePolicy.Stop,
        "skip" => NonFinitePolicy.Skip,
        _ => throw new UsageException($"--on-nan '{value}': expected stop or skip"),
    };

    private readonly Option<string> _device = new("--device") { Description = "cpu, cuda or cuda:N (cuda needs the GPU build: README, Performance).", DefaultValueFactory = _ => "cpu" };
    private readonly Option<int?> _threads = new("--threads") { Description = "ONNX Runtime intra-op threads (default: all cores)." };

    /// <summary>More intra-op threads than this only oversubscribe the cores (and ONNX Runtime stalls creating them).</summary>
    public const int MaxThreads = 256;

    public IEnumerable<Option> All => [_device, _threads];

    /// <summary>The denoiser options these flags ask for (the sample shape only where the model leaves it dynamic).</summary>
    public DenoiserOptions For(ParseResult parse, IReadOnlyList<int>? sampleShape = null)
    {
        int? threads = parse.GetValue(_threads);
        if (threads is <= 0 or > MaxThreads) throw new UsageException($"--threads {threads}: expected 1..{MaxThreads} (this machine has {Environment.ProcessorCount} cores)");
        var options = new DenoiserOptions { Device = parse.GetValue(_device)!, IntraOpThreads = threads, SampleShape = sampleShape };
        _ = options.CudaDeviceId; // a malformed --device is a usage error before any file is read
        return options;
    }
}
