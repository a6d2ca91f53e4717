using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Output;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The KL-alignment options of <c>generate</c>: a linear reward at temperature λ (θ = a/λ) or a raw θ, sampled
/// exactly by <see cref="LinearTilt"/> (DESIGN §1); a convex low-rank reward, sampled by <see cref="TiltMixtureSampler"/> (§2).</summary>
internal sealed class TiltOptions
{
    private readonly Option<string?> _reward = new("--reward") { Description = $"Reward to align to: {RewardSpec.Forms}." };
    private readonly Option<double?> _lambda = new("--lambda") { Description = "Temperature λ > 0 of the KL alignment (θ = a/λ; smaller = stronger)." };
    private readonly Option<string?> _tilt = new("--tilt") { Description = "A raw tilt θ as .npy (one sample's shape) instead of --reward/--lambda." };
    private readonly Option<string> _mode = new("--tilt-mode") { Description = "exact (default) or hybrid (Gaussian surrogate where the shift is large, DESIGN §1b).", DefaultValueFactory = _ => "exact" };
    private readonly Option<double> _trust = new("--trust-radius") { Description = "hybrid: use the surrogate where c_t‖θ‖ > this × typical ‖x_t‖.", DefaultValueFactory = _ => 1.0 };
    private readonly Option<int> _reference = new("--reference-count") { Description = "Also generate this many untilted samples (same seeds) and report the reward before alignment.", DefaultValueFactory = _ => 0 };
    private readonly Option<int> _logzNodes = new("--logz-nodes") { Description = "Gauss–Legendre nodes of the log Z / KL path quadrature.", DefaultValueFactory = _ => 6 };
    private readonly Option<int> _logzSamples = new("--logz-samples") { Description = "Tilted samples per quadrature node (0 = do not estimate log Z and KL).", DefaultValueFactory = _ => 64 };

    public IEnumerable<Option> All => [_reward, _lambda, _tilt, _mode, _trust, _reference, _logzNodes, _logzSamples];

    /// <summary>--reward and --lambda as given (the W2 stage uses them too).</summary>
    public (string? Spec, double? Lambda) RewardAndLambda(ParseResult parse) => (parse.GetValue(_reward), parse.GetValue(_lambda));

    /// <summary>What the options ask for, checked before any work is done.</summary>
    public Plan? Read(ParseResult parse, IDenoiser denoiser, string modelDirectory)
    {
        string? spec = parse.GetValue(_reward), tiltPath = parse.GetValue(_tilt);
        double? lambda = parse.GetValue(_lambda);
        if (spec is null && tiltPath is null)
        {
            if (lambda is not null) throw new UsageException("--lambda needs --reward");
            return null;
        }
        if (spec is not null && tiltPath is not null) throw new UsageException("give either --reward with --lambda or --tilt, not both");
        var mode = parse.GetValue(_mode) switch
        {
            "exact" => TiltMode.Exact,
            "hybrid" => TiltMode.Hybrid,
            var m => throw new UsageException($"--tilt-mode '{m}': expected exact or hybrid"),
        };
        double trust = parse.GetValue(_trust);
        if (!(trust > 0) || double.IsInfinity(trust)) throw new UsageException($"--trust-radius {trust}: expected a finite value > 0");
        int reference = parse.GetValue(_reference), nodes = parse.GetValue(_logzNodes), perNode = parse.GetValue(_logzSamples);
        if (reference < 0) throw new UsageException($"--reference-count {reference}: expected ≥ 0");
        if (nodes < 1) throw new UsageException($"--logz-nodes {nodes}: expected ≥ 1");
        if (perNode < 0) throw new UsageException($"--logz-samples {perNode}: expected ≥ 0");

        LinearReward? reward = null;
        FeatureReward? mixture = null;
        float[] theta = [];
        if (spec is not null)
        {
            if (lambda is not { } l || !(l > 0) || double.IsInfinity(l))
                throw new UsageException($"--lambda {(lambda?.ToString() ?? "missing")}: expected a finite value > 0 with --reward");
            // The reward's structure picks the exact algorithm: linear → one tilt; convex low-rank → a mixture of tilts.
            switch (RewardSpec.Parse(spec, denoiser.SampleShape, modelDirectory))
            {
                case LinearReward linear:
                    reward = linear;
                    theta = linear.Tilt(l);
                    break;
                case FeatureReward features when TiltMixtureSampler.Supports(features, l, out string? why) is null:
                    throw new UsageException($"--reward '{spec}' with --align kl: {why}. Linear rewards ({RewardSpec.LinearForms}) use one exact tilt; " +
                                             "--align w2 takes any of the reward forms");
                case FeatureReward features:
                    mixture = features;
                    break;
            }
        }
        else
        {
            if (lambda is not null) throw new UsageException("--lambda is for --reward; --tilt takes θ as it is");
            var array = NpyFile.Read(tiltPath!);
            if (array.Data.Length != denoiser.SampleSize)
                throw new ConfigException($"--tilt {tiltPath}: shape [{string.Join(", ", array.Shape)}], expected {denoiser.SampleSize} values [{string.Join(", ", denoiser.SampleShape)}]");
            if (array.Data.Any(v => !float.IsFinite(v))) throw new ConfigException($"--tilt {tiltPath}: contains NaN or infinite values");
            theta = array.Data;
        }
        if (mixture is not null && mode == TiltMode.Hybrid) throw new UsageException("--tilt-mode hybrid applies to linear rewards; the KL mixture uses exact tilts");
        return new Plan(reward, lambda, theta, mode, trust, reference, nodes, perNode, modelDirectory) { Mixture = mixture };
    }

    internal sealed record Plan(LinearReward? Reward, double? Lambda, float[] Theta, TiltMode Mode, double TrustRadius,
                                int ReferenceCount, int LogZNodes, int LogZSamples, string ModelDirectory)
    {
        /// <summary>A convex low-rank reward to sample by a mixture of tilts, instead of one tilt.</summary>
        public FeatureReward? Mixture { get; init; }

        /// <summary>The tilted denoiser; hybrid mode reads the data variance from the model folder or estimates it from a base batch.</summary>
        public LinearTilt CreateTilt(IDenoiser denoiser, Sampler sampler, GenerationRequest request, JsonObject alignment)
        {
            HybridSurrogate? surrogate = null;
            if (Mode == TiltMode.Hybrid)
            {
                double? variance = HybridSurrogate.ReadVariance(ModelDirectory);
                alignment["data_variance_source"] = variance is null ? "estimated from 256 base samples" : "data_moments.json";
                if (variance is null)
                {
                    var baseRun = Generation.Run(denoiser, sampler, request.SideRun(256));
                    variance = Numerics.ColumnVariances(baseRun.Samples, denoiser.SampleSize).Average();
                    alignment["data_variance_network_evaluations"] = baseRun.NetworkEvaluations;
                }
                surrogate = new HybridSurrogate(variance.Value, TrustRadius);
                alignment["data_variance"] = variance.Value;
                alignment["trust_radius"] = TrustRadius;
            }
            return new LinearTilt(denoiser, Theta, Mode, surrogate);
        }
    }
}
