using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench MODEL --black-box</c> (issue #18): DESIGN §8's methods on a network reward at equal network
/// evaluations, against a high-budget reference that does not assume them — self-normalised importance weighting of many
/// base samples of the same sampler. For each λ: ESS per network evaluation, E_π[r] and the class rate with their errors
/// against the reference, network and reward evaluations; and the reward network's own cost.
/// </summary>
internal static class BlackBoxBench
{
    /// <summary>The settings of one bench run.</summary>
    public sealed record Settings(string Model, string Reward, double[] Lambdas, int Steps, int Particles, int ReferenceCount, int BestOf, long Seed);

    private static readonly BlackBoxMethod[] Methods =
        [BlackBoxMethod.TiltSmc, BlackBoxMethod.TiltImportance, BlackBoxMethod.FeynmanKac, BlackBoxMethod.ImportanceResampling, BlackBoxMethod.BestOfN];

    public static JsonObject Run(Settings s, DenoiserOptions options, string? plotPath)
    {
        var located = DiffusionModel.Locate(s.Model);
        using var denoiser = located.OpenDenoiser(options);
        var range = located.DataRange;
        using var reward = RewardSpec.Parse(s.Reward, denoiser.SampleShape, located.Directory, new NetworkRewardOptions(range, options));
        if (reward is not OnnxReward network) throw new UsageException($"bench --black-box: --reward '{s.Reward}' is not a network reward (onnx:PATH@CLASS)");
        var sampler = Sampler.Create("ddpm", located.Config, s.Steps);
        var baseLaw = ExactTilt.BaseLaw(denoiser, range);
        int d = denoiser.SampleSize;

        // The reward network's own cost against the diffusion network's, per sample.
        var probe = Generation.Run(baseLaw, sampler, new GenerationRequest { Count = 64, BatchSize = 64, Seed = s.Seed + 77 });
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 4; i++) reward.EvaluateBatch(probe.Samples);
        double rewardMs = clock.Elapsed.TotalMilliseconds / (4 * 64);
        double networkMs = probe.ModelTime.TotalMilliseconds / probe.NetworkEvaluations;
        Console.WriteLine($"reward network {rewardMs:F3} ms per sample, diffusion network {networkMs:F3} ms per sample and step ({rewardMs / networkMs:F2}×)");

        Console.WriteLine($"reference: {s.ReferenceCount} base samples ({sampler.Name}, {s.Steps} steps) weighted by e^(r/λ) …");
        var reference = ProgressReporter.Run("reference", progress => Generation.Run(baseLaw, sampler,
            new GenerationRequest { Count = s.ReferenceCount, BatchSize = 256, Seed = s.Seed + 9_000_001 }, progress));
        var referenceRewards = reward.EvaluateBatch(reference.Samples);
        var referenceHits = Hits(network, reference.Samples);

        var rows = new JsonArray();
        var series = Methods.ToDictionary(m => m, _ => new List<(double Lambda, double EssPerEvaluation)>());
        foreach (double lambda in s.Lambdas)
        {
            var logW = referenceRewards.Select(r => r / lambda).ToArray();
            var w = WeightedSamples.Normalize(logW);
            var (refR, refRSe) = WeightedSamples.Mean(referenceRewards, w);
            var (refRate, refRateSe) = WeightedSamples.Mean(referenceHits, w);
            double refEss = WeightedSamples.EffectiveSampleSize(w);
            Console.WriteLine($"λ = {lambda:G3}: reference E_π[r] {refR:F4} ± {refRSe:F4}, class rate {refRate:P1} ± {refRateSe:P1} (ESS {refEss:F0} of {s.ReferenceCount})");
            long budget = 0;
            var methods = new JsonArray();
            foreach (var method in Methods)
            {
                // Equal network evaluations: tilt-SMC's (pilot rounds included) set the others' particles.
                int particles = method is BlackBoxMethod.TiltSmc or BlackBoxMethod.TiltImportance ? s.Particles
                    : (int)Math.Max(64, Math.Round(budget / (double)s.Steps / 64) * 64);
                const int count = 64;
                var settings = new KlAlignmentSettings
                {
                    BlackBox = new BlackBoxSettings { Method = method, BestOf = s.BestOf },
                    Exact = new ExactTiltSettings { MaxParticlesPerSample = particles / (double)count, TargetEssPerSample = 1e6, MinSystems = 1,
                                                    Smc = new SmcSettings { ParticlesPerSystem = 64 } },
                };
                int returned = method == BlackBoxMethod.BestOfN ? Math.Max(1, particles / s.BestOf) : count;
                var request = new GenerationRequest { Count = returned, BatchSize = 256, Seed = s.Seed + 1000 * (long)(Array.IndexOf(Methods, method) + 1) };
                clock.Restart();
                var run = ProgressReporter.Run($"λ {lambda:G3} {BlackBoxAlignment.Name(method)}", progress =>
                    KlAlignment.Run(denoiser, range, sampler, reward, lambda, settings, request, new SyncProgress<GenerationProgress>(progress)));
                double seconds = clock.Elapsed.TotalSeconds;
                long evaluations = run.Samples.NetworkEvaluations + run.SetupEvaluations;
                if (method == BlackBoxMethod.TiltSmc) budget = evaluations;
                long rewardEvaluations = run.BlackBox!.RewardEvaluations + (run.BlackBox.Fit?.RewardEvaluations ?? 0);
                var row = new JsonObject
                {
                    ["method"] = BlackBoxAlignment.Name(method), ["network_evaluations"] = evaluations, ["reward_evaluations"] = rewardEvaluations,
                    ["seconds"] = seconds,
                };
                double essPerEvaluation;
                string line;
                if (run.Exact is { } exact)
                {
                    var p = exact.Particles;
                    var r = p.Mean(exact.Potentials.Select(g => g * lambda).ToArray());   // G = r/λ at every particle, from the run
                    var rate = p.Mean(Hits(network, p.Samples));
                    essPerEvaluation = p.EffectiveSampleSize / evaluations;
                    row["particles"] = p.Count;
                    row["effective_sample_size"] = p.EffectiveSampleSize;
                    row["effective_systems"] = p.SystemEffectiveSize;
                    row["systems"] = p.SystemSizes.Count;
                    row["ess_per_network_evaluation"] = essPerEvaluation;
                    row["mean_reward"] = Pair(r.Value, r.StandardError);
                    row["class_rate"] = Pair(rate.Value, rate.StandardError);
                    row["mean_reward_error"] = r.Value - refR;
                    row["mean_reward_z"] = (r.Value - refR) / Math.Sqrt(r.StandardError * r.StandardError + refRSe * refRSe);
                    row["class_rate_error"] = rate.Value - refRate;
                    row["log_partition"] = Pair(exact.LogPartition.Value, exact.LogPartition.StandardError);
                    row["kl_divergence"] = Pair(exact.KlDivergence.Value, exact.KlDivergence.StandardError);
                    if (run.BlackBox.Fit is { } fit) row["tilt_fit_r_squared"] = new JsonArray(fit.Rounds.Select(x => (JsonNode)x.RSquared).ToArray());
                    line = $"ESS {p.EffectiveSampleSize,7:F1} of {p.Count,5} ({essPerEvaluation * 1e3,7:F3} per 1000 evals), E[r] {r.Value,8:F4} ± {r.StandardError:F4} " +
                           $"(z {(double)row["mean_reward_z"]!,5:F1}), class rate {rate.Value,6:P1}";
                }
                else
                {
                    // Best-of-N is no sampler of π: its mean is reported, its error says how far from π it lands.
                    var r = reward.EvaluateBatch(run.Samples.Samples);
                    var hits = Hits(network, run.Samples.Samples);
                    double mean = r.Average(), rate = hits.Average();
                    essPerEvaluation = 0;
                    row["returned"] = run.Samples.Count;
                    row["mean_reward"] = Pair(mean, Std(r) / Math.Sqrt(r.Length));
                    row["class_rate"] = Pair(rate, Std(hits) / Math.Sqrt(hits.Length));
                    row["mean_reward_error"] = mean - refR;
                    row["class_rate_error"] = rate - refRate;
                    line = $"{run.Samples.Count} samples of best-of-{s.BestOf} (no weights), E[r] {mean,8:F4}, class rate {rate,6:P1}";
                }
                series[method].Add((lambda, essPerEvaluation));
                Console.WriteLine($"  {BlackBoxAlignment.Name(method),-12} {evaluations,8} network evals, {line}");
                methods.Add(row);
            }
            rows.Add(new JsonObject
            {
                ["lambda"] = lambda,
                ["reference"] = new JsonObject
                {
                    ["base_samples"] = s.ReferenceCount, ["effective_sample_size"] = refEss, ["mean_reward"] = Pair(refR, refRSe), ["class_rate"] = Pair(refRate, refRateSe),
                },
                ["methods"] = methods,
            });
        }
        // No method can beat this: the ESS of N particles is at most N, and a particle costs at least one network
        // evaluation per step (the tilted methods two), so ESS per evaluation ≤ 1/steps.
        double bound = 1.0 / s.Steps;
        Console.WriteLine($"bound: ESS per network evaluation ≤ 1/steps = {bound * 1e3:F1} per 1000 evaluations for any method ({bound * 500:F1} for the tilted ones, two calls per step)");
        if (plotPath is not null) Plot(plotPath, series, bound);
        return new JsonObject
        {
            ["model"] = located.Directory, ["reward"] = s.Reward, ["sampler"] = sampler.Name, ["steps"] = s.Steps, ["particles"] = s.Particles,
            ["ess_per_evaluation_bound"] = bound,
            ["ess_per_evaluation_bound_reason"] = "ESS ≤ particles and every particle costs ≥ one network evaluation per step (tilted proposals two), so ESS per evaluation ≤ 1/steps for any method",
            ["reward_ms_per_sample"] = rewardMs, ["network_ms_per_sample_step"] = networkMs,
            ["reference_source"] = "self-normalised importance weighting of base samples of the same sampler by e^(r/λ) (assumes none of the methods)",
            ["rows"] = rows,
        };
    }

    /// <summary>1 where the reward network's predicted class is the reward's class, else 0.</summary>
    private static double[] Hits(OnnxReward network, float[] samples)
    {
        var outputs = network.Outputs(samples);
        int classes = network.Model.OutputSizes[0];
        return Enumerable.Range(0, outputs.Length / classes)
            .Select(i => Numerics.ArgMax<float>(outputs.AsSpan(i * classes, classes)) == network.Index ? 1.0 : 0.0).ToArray();
    }

    private static double Std(double[] v)
    {
        double m = v.Average();
        return v.Length < 2 ? 0 : Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / (v.Length - 1));
    }

    private static JsonObject Pair(double value, double se) => new() { ["value"] = value, ["standard_error"] = se };

    private static void Plot(string path, Dictionary<BlackBoxMethod, List<(double Lambda, double EssPerEvaluation)>> series, double bound)
    {
        var plot = new ScottPlot.Plot();
        var limit = plot.Add.HorizontalLine(Math.Log10(bound));
        limit.LinePattern = ScottPlot.LinePattern.Dashed;
        limit.LegendText = "bound 1/steps (any method)";
        foreach (var (method, points) in series)
        {
            if (method == BlackBoxMethod.BestOfN) continue;
            var scatter = plot.Add.Scatter(points.Select(p => Math.Log10(p.Lambda)).ToArray(), points.Select(p => Math.Log10(Math.Max(p.EssPerEvaluation, 1e-9))).ToArray());
            scatter.LegendText = BlackBoxAlignment.Name(method);
        }
        plot.Title("ESS per network evaluation against λ");
        plot.XLabel("log10 λ");
        plot.YLabel("log10 (ESS / network evaluations)");
        plot.ShowLegend();
        Panels.Save(path, [plot], 640);
    }
}
