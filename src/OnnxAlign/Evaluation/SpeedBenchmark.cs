using System.Text.Json.Serialization;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using static System.Text.Json.Serialization.JsonIgnoreCondition;

namespace OnnxAlign.Evaluation;

/// <summary>What <see cref="SpeedBenchmark.Run"/> times.</summary>
public sealed record SpeedBenchmarkSettings
{
    /// <summary>DDIM steps per run.</summary>
    public int Steps { get; init; } = 20;

    /// <summary>Samples per run (one batch).</summary>
    public int Batch { get; init; } = 16;

    /// <summary>Timed repeats of each variant (medians are reported).</summary>
    public int Repeats { get; init; } = 5;

    /// <summary>Also measure throughput for batch 1…256 with all cores and with one intra-op thread.</summary>
    public bool Throughput { get; init; }
}

/// <summary>The prox stage timed on one reward (one oracle structure).</summary>
/// <param name="Reward">The reward spec.</param>
/// <param name="Lambda">λ.</param>
/// <param name="Algorithm">The oracle's algorithm, picked from the reward's structure.</param>
/// <param name="SamplesPerSecond">Samples moved per second (median of the repeats).</param>
/// <param name="PerSampleOverNetworkEvaluation">The stage's time per sample over one network evaluation's time per sample.</param>
public sealed record ProxWorkloadTiming(string Reward, double Lambda, string Algorithm, double SamplesPerSecond, double PerSampleOverNetworkEvaluation);

/// <summary>Throughput at one batch size and thread count.</summary>
/// <param name="Threads">Intra-op threads.</param>
/// <param name="Batch">Samples per run.</param>
/// <param name="SamplesPerSecond">Samples per second (median of three runs).</param>
public sealed record ThroughputPoint(int Threads, int Batch, double SamplesPerSecond);

/// <summary>
/// What <see cref="SpeedBenchmark.Run"/> measured (the JSON <c>onnxalign bench --out</c> writes, as
/// <see cref="IO.ReportJson"/> writes it; the CLI adds <c>pytorch</c> after it). Times are medians over the repeats, in
/// seconds; the ratios are of these medians.
/// </summary>
public sealed record SpeedBenchmarkResult
{
    /// <summary>The model file.</summary>
    public required string Model { get; init; }

    /// <summary>Cores and operating system.</summary>
    public required string Machine { get; init; }

    /// <summary>The session's device.</summary>
    public required string Device { get; init; }

    /// <summary>ONNX Runtime's version.</summary>
    public required string Onnxruntime { get; init; }

    /// <summary>Where the bound host buffers live.</summary>
    public required string HostBuffers { get; init; }

    /// <summary>The network's sample element type (Float, Float16).</summary>
    public required string NetworkElementType { get; init; }

    /// <summary>DDIM steps per run.</summary>
    public required int Steps { get; init; }

    /// <summary>Samples per run.</summary>
    public required int Batch { get; init; }

    /// <summary>Timed repeats of each variant.</summary>
    public required int Repeats { get; init; }

    /// <summary>Untilted generation.</summary>
    public required double UntiltedSecondsMedian { get; init; }

    /// <summary>Generation with an exact linear tilt (brightness at λ = 0.05).</summary>
    public required double TiltedSecondsMedian { get; init; }

    /// <summary>The network's share of the untilted runs.</summary>
    public required double NetworkSecondsMedian { get; init; }

    /// <summary>Tilted over untilted (target ≤ 1.05).</summary>
    public double TiltedOverUntilted => TiltedSecondsMedian / UntiltedSecondsMedian;

    /// <summary>Untilted generation over its network time.</summary>
    public double SamplingOverNetwork => UntiltedSecondsMedian / NetworkSecondsMedian;

    /// <summary>Samples per second of untilted generation.</summary>
    public double SamplesPerSecondUntilted => Batch / UntiltedSecondsMedian;

    /// <summary>The prox stage on the same batch, one reward per oracle structure.</summary>
    public required IReadOnlyList<ProxWorkloadTiming> Prox { get; init; }

    /// <summary>The same number of bare session runs on the same pre-bound batch: the floor.</summary>
    public required double BareRunLoopSecondsMedian { get; init; }

    /// <summary>Untilted generation over the bare run loop (target ≤ 1.05).</summary>
    public double SamplingOverBareRunLoop => UntiltedSecondsMedian / BareRunLoopSecondsMedian;

    /// <summary>Throughput by thread count and batch size, when asked for (<see cref="SpeedBenchmarkSettings.Throughput"/>); else null and left out.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<ThroughputPoint>? Throughput { get; init; }

    /// <summary>The process's peak working set after the measurements, in MiB.</summary>
    public required double PeakWorkingSetMb { get; init; }
}

/// <summary>
/// Speed ratios measured in one run (<c>onnxalign bench</c>; never asserted in tests): untilted and tilted generation
/// alternate, repeat after repeat, so drift of the machine affects both alike, and the median of each is reported; then
/// the bare session-run loop on the same batch (the floor), the prox stage per oracle structure, and optionally the
/// throughput sweep.
/// </summary>
public static class SpeedBenchmark
{
    /// <summary>Times <paramref name="model"/>.</summary>
    /// <param name="model">The model's folder (or its model file).</param>
    /// <param name="settings">Steps, batch, repeats and whether to sweep throughput; null for the defaults.</param>
    /// <param name="options">How the network's session is made; the throughput sweep also runs it with one intra-op thread.</param>
    /// <param name="progress">Each throughput point as it is measured.</param>
    /// <param name="cancellationToken">Stops the benchmark within one network call.</param>
    /// <exception cref="ArgumentOutOfRangeException">Steps, batch or repeats not positive.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public static SpeedBenchmarkResult Run(string model, SpeedBenchmarkSettings? settings = null, DenoiserOptions? options = null,
                                           IProgress<ThroughputPoint>? progress = null, CancellationToken cancellationToken = default)
    {
        settings ??= new SpeedBenchmarkSettings();
        int s = settings.Steps, b = settings.Batch, r = settings.Repeats;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(s, nameof(settings));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(b, nameof(settings));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(r, nameof(settings));
        options ??= new DenoiserOptions();
        var located = DiffusionModel.Locate(model);
        using var cancellation = NetworkCancellation.Enter(cancellationToken);
        using var denoiser = located.OpenDenoiser(options);
        var sampler = Sampler.Create("ddim", located.Config, s);
        var tilt = new LinearTilt(denoiser, RewardSpec.ParseLinear("brightness", denoiser.SampleShape, located.Directory).Tilt(0.05));
        var request = new GenerationRequest { Count = b, BatchSize = b, Seed = 1, Cancellation = cancellationToken };

        Generation.Run(denoiser, sampler, request);  // warm-up: session initialisation, buffers
        Generation.Run(tilt, sampler, request);
        var plain = new List<double>();
        var tilted = new List<double>();
        var network = new List<double>();
        for (int i = 0; i < r; i++)
        {
            var a = Generation.Run(denoiser, sampler, request);
            plain.Add(a.TotalTime.TotalSeconds);
            network.Add(a.ModelTime.TotalSeconds);
            tilted.Add(Generation.Run(tilt, sampler, request).TotalTime.TotalSeconds);
        }
        double plainMedian = Median(plain), tiltedMedian = Median(tilted), networkMedian = Median(network);
        // The floor: the same number of bare session.Run calls on the same pre-bound batch.
        denoiser.TimeBareRuns(b, 2);
        double bareMedian = Median(Enumerable.Range(0, r).Select(_ => denoiser.TimeBareRuns(b, s).TotalSeconds).ToList());

        // The prox stage on the same batch, image model in [−1, 1] (box on), one reward per oracle structure.
        var baseSamples = Generation.Run(denoiser, sampler, request).Samples;
        double perEvaluation = networkMedian / (s * b);
        var prox = new List<ProxWorkloadTiming>();
        foreach (var (spec, lambda) in ProxWorkloads(denoiser.SampleShape))
        {
            var oracle = new ProxOracle(RewardSpec.Parse(spec, denoiser.SampleShape, located.Directory),
                new ProxSettings { Lambda = lambda, Box = ImageFiles.IsImage(denoiser.SampleShape) ? ValueBox.Pixels : null });
            ProxStage.Apply(oracle, baseSamples, cancellation: cancellationToken);  // warm-up
            var times = Enumerable.Range(0, r).Select(_ => ProxStage.Apply(oracle, baseSamples, cancellation: cancellationToken).Time.TotalSeconds).ToList();
            double median = Median(times), perSample = median / b;
            prox.Add(new ProxWorkloadTiming(spec, lambda, oracle.Method, b / median, perSample / perEvaluation));
        }
        var throughput = settings.Throughput ? Throughput(located, sampler, options, progress, cancellationToken) : null;
        return new SpeedBenchmarkResult
        {
            Model = located.OnnxPath,
            Machine = $"{Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
            Device = denoiser.Device,
            Onnxruntime = Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString(),
            HostBuffers = denoiser.HostMemory,
            NetworkElementType = denoiser.SampleElementType.ToString(),
            Steps = s, Batch = b, Repeats = r,
            UntiltedSecondsMedian = plainMedian, TiltedSecondsMedian = tiltedMedian, NetworkSecondsMedian = networkMedian,
            Prox = prox,
            BareRunLoopSecondsMedian = bareMedian,
            Throughput = throughput,
            PeakWorkingSetMb = System.Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0,
        };
    }

    /// <summary>Samples per second for batch 1…256, with all cores and with one intra-op thread (DDIM, the bench's steps).</summary>
    private static List<ThroughputPoint> Throughput(DiffusionModel located, Sampler sampler, DenoiserOptions options, IProgress<ThroughputPoint>? progress,
                                                    CancellationToken cancellationToken)
    {
        var points = new List<ThroughputPoint>();
        foreach (int? t in new[] { options.IntraOpThreads, 1 })
        {
            using var d = located.OpenDenoiser(options with { IntraOpThreads = t });
            foreach (int batch in new[] { 1, 4, 16, 64, 256 })
            {
                var request = new GenerationRequest { Count = batch, BatchSize = batch, Seed = 1, Cancellation = cancellationToken };
                Generation.Run(d, sampler, request);
                var times = Enumerable.Range(0, 3).Select(_ => Generation.Run(d, sampler, request).TotalTime.TotalSeconds).ToList();
                var point = new ThroughputPoint(t ?? Environment.ProcessorCount, batch, batch / Median(times));
                points.Add(point);
                progress?.Report(point);
            }
        }
        return points;
    }

    /// <summary>A reward per prox structure: linear (closed form), k = 3 concave (Newton), k = 1 Lipschitz (branch-and-bound).</summary>
    private static IEnumerable<(string Spec, double Lambda)> ProxWorkloads(IReadOnlyList<int> shape)
    {
        int size = shape.Aggregate(1, (a, b) => a * b);
        yield return ("brightness", 1.0 / size);
        if (ImageFiles.IsImage(shape)) yield return ($"color-target:{string.Join(",", Enumerable.Repeat("0.8", shape[0]))}", 1.0 / size);
        yield return ("ramp:brightness,0.1,0.3", 0.2 / size);
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
