using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.IO;
using OnnxAlign.Rewards;

namespace OnnxAlign.Cli;

/// <summary>The Wasserstein-prox options shared by <c>prox</c> and <c>generate --align w2</c> (DESIGN §3).</summary>
internal sealed class ProxOptions
{
    private readonly Option<string?> _weights = new("--cost-weights") { Description = "Per-coordinate weights w > 0 of the cost ½Σw(x−y)²: .npy (one sample's shape) or a grey PNG (level/255, all channels)." };
    private readonly Option<bool> _noClamp = new("--no-clamp") { Description = "Do not keep image samples in the pixel range [−1, 1]." };
    private readonly Option<double> _tolerance = new("--gap-tolerance") { Description = "Certified optimality gap to reach, relative to max(1, |objective|).", DefaultValueFactory = _ => 1e-4 };

    public IEnumerable<Option> All => [_weights, _noClamp, _tolerance];

    /// <summary>The oracle the options and a reward spec ask for; checked before any work.</summary>
    public ProxOracle CreateOracle(ParseResult parse, string spec, double? lambda, IReadOnlyList<int> sampleShape, string? modelDirectory,
                                   NetworkRewardOptions? network = null)
    {
        if (lambda is not { } l || !(l > 0) || double.IsInfinity(l))
            throw new UsageException($"--lambda {(lambda?.ToString() ?? "missing")}: expected a finite value > 0 with --reward");
        double tolerance = parse.GetValue(_tolerance);
        if (!(tolerance > 0) || double.IsInfinity(tolerance)) throw new UsageException($"--gap-tolerance {tolerance}: expected a finite value > 0");
        var reward = RewardSpec.Parse(spec, sampleShape, modelDirectory, network);
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        var cost = parse.GetValue(_weights) is { } path ? new TransportCost(ReadWeights(path, sampleShape, size)) : TransportCost.Euclidean;
        var settings = new ProxSettings
        {
            Lambda = l,
            Cost = cost,
            Box = ImageFiles.IsImage(sampleShape) && !parse.GetValue(_noClamp) ? ValueBox.Pixels : null,
            Tolerance = tolerance,
        };
        try { return new ProxOracle(reward, settings); }
        catch (ArgumentException e) { throw new UsageException($"--reward '{spec}': {e.Message}"); }
    }

    private static float[] ReadWeights(string path, IReadOnlyList<int> sampleShape, int size)
    {
        float[] weights;
        if (path.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
        {
            if (!ImageFiles.IsImage(sampleShape)) throw new UsageException($"--cost-weights {path}: a PNG needs image samples");
            var plane = ImageFiles.ReadImage(path, [1, sampleShape[1], sampleShape[2]]);
            weights = new float[size];
            for (int c = 0; c < sampleShape[0]; c++)
                for (int i = 0; i < plane.Length; i++) weights[c * plane.Length + i] = (plane[i] + 1) / 2;
        }
        else
        {
            var array = NpyFile.Read(path);
            if (array.Data.Length != size)
                throw new UsageException($"--cost-weights {path}: shape [{string.Join(", ", array.Shape)}], expected {size} values [{string.Join(", ", sampleShape)}]");
            weights = array.Data;
        }
        int bad = Array.FindIndex(weights, w => !(w > 0) || !float.IsFinite(w));
        if (bad >= 0) throw new UsageException($"--cost-weights {path}: value {bad} is {weights[bad]}; weights must be finite and > 0 (a zero weight would let that coordinate move for free)");
        return weights;
    }

    /// <summary>The report section of a prox stage (the library's typed <see cref="ProxReport"/>): settings, per-sample results and summaries.</summary>
    public static JsonObject Report(ProxOracle oracle, ProxBatch batch, IReadOnlyList<int> indices) =>
        (JsonObject)ReportJson.ToNode(ProxReport.Of(oracle, batch, indices));

    /// <summary>One line for the console.</summary>
    public static string Describe(ProxBatch batch) =>
        $"prox: reward {batch.Results.Average(r => r.RewardBefore):g4} → {batch.Results.Average(r => r.RewardAfter):g4}, " +
        $"transport cost {batch.Results.Average(r => r.TransportCost):g4}, max certified gap {batch.MaxGap:g3}, " +
        $"box active for {batch.BoxActiveCount}/{batch.Results.Length}, {batch.SamplesPerSecond:g4} samples/s";
}
