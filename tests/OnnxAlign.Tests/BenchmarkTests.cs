using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;

namespace OnnxAlign.Tests;

/// <summary>
/// The library's benchmarks behind <c>onnxalign bench</c> (issue #16: the CLI parses, prints and writes; the library
/// measures): <see cref="MixtureBenchmark"/>, <see cref="BlackBoxBenchmark"/> and <see cref="SpeedBenchmark"/>, their
/// typed results and the JSON keys <see cref="ReportJson"/> writes of them (the keys <c>bench --out</c> has always written).
/// </summary>
public sealed class BenchmarkTests
{
    private static string Fashion => Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");

    private static string[] Keys(object record) => ReportJson.ToNode(record).AsObject().Select(kv => kv.Key).ToArray();

    /// <summary>Every report, in order (runs may report from worker threads).</summary>
    private sealed class Recorder<T> : IProgress<T>
    {
        private readonly List<T> _seen = [];

        public List<T> Seen { get { lock (_seen) return [.. _seen]; } }

        public void Report(T value) { lock (_seen) _seen.Add(value); }
    }

    [Fact]
    public void TheMixtureBenchmarkOnGmm2dMeetsTheKsCriticalValueAndBestOfNDoesNot()
    {
        const int count = 400;
        var progress = new Recorder<MixtureBenchmarkProgress>();
        var result = MixtureBenchmark.Run(TestSupport.Toy("gmm2d"), new MixtureBenchmarkSettings { Count = count, Lambdas = [0.5], BudgetMultipliers = [1, 10] },
                                          progress: progress);
        Assert.Equal(1.63 / Math.Sqrt(count), result.KsCritical, 12);
        var row = Assert.Single(result.Rows);
        Assert.Equal(0.5, row.Lambda);
        Assert.Equal(result.KsCritical, row.KsCritical);
        // Every KS distance is a distance between two CDFs: in [0, 1].
        foreach (double ks in row.SirKsByBudgetMultiplier.Values.Append(row.MixtureKs).Append(row.BestOfNKs))
            Assert.True(double.IsFinite(ks) && ks is >= 0 and <= 1, $"KS {ks}");
        // The mixture samples the aligned law: it cannot be told from the quadrature truth at the 1 % level. Best-of-N
        // at the same cost samples no law of λ and lands far from it.
        Assert.True(row.MixtureKs <= row.KsCritical, $"mixture KS {row.MixtureKs} above the critical value {row.KsCritical}");
        Assert.True(row.BestOfNKs > row.KsCritical && row.BestOfNKs > 2 * row.MixtureKs, $"best-of-{row.BestOfN} KS {row.BestOfNKs}");
        // A sample costs at least one pass of the sampler; the acceptance is a rate.
        Assert.True(row.MixtureEvaluationsPerSample >= 100, $"{row.MixtureEvaluationsPerSample} evaluations per sample");
        Assert.InRange(row.MixtureAcceptance, 1e-3, 1);
        Assert.True(row.BestOfN >= 1);
        Assert.Equal(["1x", "10x"], row.SirKsByBudgetMultiplier.Keys);
        string expectedNeeds = row.SirKsByBudgetMultiplier["1x"] <= row.KsCritical ? "1×" : row.SirKsByBudgetMultiplier["10x"] <= row.KsCritical ? "10×" : "> 10×";
        Assert.Equal(expectedNeeds, row.SirBudgetToReachCriticalKs);

        // Progress: the start (what the header says), then the row.
        Assert.Equal(2, progress.Seen.Count);
        var started = Assert.IsType<MixtureBenchmarkStarted>(progress.Seen[0]);
        Assert.Equal((count, 100, result.KsCritical), (started.Count, started.Steps, started.KsCritical));
        Assert.Same(row, Assert.IsType<MixtureBenchmarkRowFinished>(progress.Seen[1]).Row);

        // bench --kl-mixture's JSON rows, key for key.
        Assert.Equal(["lambda", "mixture_method", "mixture_evaluations_per_sample", "mixture_acceptance", "mixture_ks", "sir_ks_by_budget_multiplier",
                      "sir_budget_to_reach_critical_ks", "best_of_n_ks", "best_of_n", "ks_critical"], Keys(row));
        Assert.Equal(["1x", "10x"], ReportJson.ToNode(row)["sir_ks_by_budget_multiplier"]!.AsObject().Select(kv => kv.Key));
    }

    [Fact]
    public void TheMixtureBenchmarkRefusesAToyWithoutAKnownLaw()
    {
        var e = Assert.Throws<ConfigException>(() => MixtureBenchmark.Run(TestSupport.Toy("tiny-unet"), new MixtureBenchmarkSettings { Count = 10 }));
        Assert.Contains("mixture.json", e.Message);
    }

    [Fact]
    [Trait("Category", "Slow")]
    public void TheBlackBoxBenchmarkHoldsEveryMethodToTheBoundAndTheReference()
    {
        const int steps = 2, particles = 64, referenceCount = 128;
        var progress = new Recorder<BlackBoxBenchmarkProgress>();
        var result = BlackBoxBenchmark.Run(Fashion, $"onnx:{Path.Combine(Fashion, "evaluator")}@Trouser",
            new BlackBoxBenchmarkSettings { Lambdas = [1], Steps = steps, Particles = particles, ReferenceCount = referenceCount }, progress: progress);

        Assert.Equal(1.0 / steps, result.EssPerEvaluationBound);
        Assert.Equal(("ddpm", steps, particles), (result.Sampler, result.Steps, result.Particles));
        Assert.True(result.RewardMsPerSample > 0 && result.NetworkMsPerSampleStep > 0);
        var row = Assert.Single(result.Rows);
        var reference = row.Reference;
        Assert.Equal(referenceCount, reference.BaseSamples);
        Assert.InRange(reference.EffectiveSampleSize, 1, referenceCount);
        Assert.InRange(reference.ClassRate.Value, 0, 1);
        Assert.True(reference.MeanReward.StandardError > 0 && double.IsFinite(reference.MeanReward.Value));

        Assert.Equal(BlackBoxBenchmark.Methods.Select(BlackBoxAlignment.Name), row.Methods.Select(m => m.Method));
        long budget = row.Methods[0].NetworkEvaluations;
        foreach (var method in row.Methods)
        {
            Assert.Equal(method.MeanReward.Value - reference.MeanReward.Value, method.MeanRewardError, 12);
            Assert.Equal(method.ClassRate.Value - reference.ClassRate.Value, method.ClassRateError, 12);
            Assert.InRange(method.ClassRate.Value, 0, 1);
            Assert.True(method.RewardEvaluations > 0 && method.Seconds > 0, method.Method);
            if (method.Method is not "tilt-smc" and not "tilt-is")   // the others get tilt-SMC's evaluations, to a 64-particle system
                Assert.True(Math.Abs(method.NetworkEvaluations - budget) <= 64 * steps, $"{method.Method}: {method.NetworkEvaluations} against {budget}");
            if (method.EssPerNetworkEvaluation is { } essPerEvaluation)
            {
                // ESS ≤ particles, and every particle costs at least one evaluation per step: ESS per evaluation ≤ 1/steps.
                Assert.InRange(method.EffectiveSampleSize!.Value, 1 - 1e-9, method.Particles!.Value + 1e-9);
                Assert.Equal(method.EffectiveSampleSize.Value / method.NetworkEvaluations, essPerEvaluation, 12);
                Assert.True(essPerEvaluation <= result.EssPerEvaluationBound, $"{method.Method}: {essPerEvaluation}");
                Assert.NotNull(method.MeanRewardZ);
                Assert.Null(method.Returned);
            }
            else
            {
                Assert.Equal("best-of-n", method.Method);
                // Best-of-16 of tilt-SMC's budget: each returned sample costs 16 draws of `steps` evaluations.
                Assert.Equal(method.NetworkEvaluations, (long)method.Returned!.Value * 16 * steps);
                Assert.Null(method.MeanRewardZ);
            }
        }

        // Progress: the cost, the reference, then each method's start and end in order (a bar and a line each in the CLI).
        var kinds = progress.Seen.Where(p => p is not BlackBoxSampling).Select(p => p.GetType().Name).ToArray();
        Assert.Equal(["BlackBoxCostMeasured", "BlackBoxReferenceStarted", "BlackBoxReferenceWeighted",
                      .. Enumerable.Repeat(new[] { "BlackBoxMethodStarted", "BlackBoxMethodFinished" }, BlackBoxBenchmark.Methods.Count).SelectMany(k => k)], kinds);
        Assert.Contains(progress.Seen, p => p is BlackBoxSampling { Method: null });
        Assert.Equal(row.Methods, progress.Seen.OfType<BlackBoxMethodFinished>().Select(f => f.Row));
        // Each SMC method's bar ends full although its ESS target is out of reach (the budget ends the run), and its
        // count is of effective samples it can reach, not of that target (was "0% (63/64000000 samples)").
        foreach (var method in new[] { BlackBoxMethod.TiltSmc, BlackBoxMethod.TiltImportance, BlackBoxMethod.FeynmanKac })
        {
            var bars = progress.Seen.OfType<BlackBoxSampling>().Where(p => p.Method == method).Select(p => p.Generation).ToArray();
            Assert.NotEmpty(bars);
            Assert.Equal(bars[^1].StepsTotal, bars[^1].StepsDone);
            Assert.All(bars, b => Assert.InRange(b.SamplesDone, 0, b.SamplesTotal));
            // The budget's particles (the row's) cap what the ESS can reach, so they are the bar's total.
            Assert.All(bars, b => Assert.Equal(row.Methods.Single(m => m.Method == BlackBoxAlignment.Name(method)).Particles, b.SamplesTotal));
            Assert.True(bars.Zip(bars.Skip(1)).All(pair => pair.Second.StepsDone >= pair.First.StepsDone), $"{method}: the bar went back");
        }

        // bench --black-box's JSON, key for key: the block, a weighted method's row and best-of-N's.
        Assert.Equal(["model", "reward", "sampler", "steps", "particles", "ess_per_evaluation_bound", "ess_per_evaluation_bound_reason", "reward_ms_per_sample",
                      "network_ms_per_sample_step", "reference_source", "rows"], Keys(result));
        Assert.Equal(["lambda", "reference", "methods"], Keys(row));
        Assert.Equal(["base_samples", "effective_sample_size", "mean_reward", "class_rate"], Keys(reference));
        Assert.Equal(["method", "network_evaluations", "reward_evaluations", "seconds", "particles", "effective_sample_size", "effective_systems", "systems",
                      "ess_per_network_evaluation", "mean_reward", "class_rate", "mean_reward_error", "mean_reward_z", "class_rate_error", "log_partition",
                      "kl_divergence", "tilt_fit_r_squared"], Keys(row.Methods[0]));
        Assert.Equal(["method", "network_evaluations", "reward_evaluations", "seconds", "returned", "mean_reward", "class_rate", "mean_reward_error",
                      "class_rate_error"], Keys(row.Methods[^1]));
        Assert.Equal(["value", "standard_error"], ReportJson.ToNode(row.Methods[0])["log_partition"]!.AsObject().Select(kv => kv.Key));
    }

    [Theory]
    [InlineData(63)]
    [InlineData(0)]
    public void TheBlackBoxBenchmarkRefusesParticlesOutsideWholeSystemsNamingTheSetting(int particles)
    {
        var e = Assert.Throws<ConfigException>(() => BlackBoxBenchmark.Run(Fashion, "brightness", new BlackBoxBenchmarkSettings { Particles = particles }));
        Assert.Equal("BlackBoxBenchmarkSettings.Particles", e.Parameter);
        Assert.Equal($"--particles {particles}: expected a multiple of 64", Cli.Flags.Describe(e));
    }

    [Fact]
    public void TheSpeedBenchmarkReportsItsMediansRatiosAndProxWorkloads()
    {
        var result = SpeedBenchmark.Run(TestSupport.Toy("tiny-unet"), new SpeedBenchmarkSettings { Steps = 2, Batch = 2, Repeats = 1 });
        Assert.Equal((2, 2, 1), (result.Steps, result.Batch, result.Repeats));
        Assert.Equal("cpu", result.Device);
        Assert.EndsWith("model.onnx", result.Model);
        foreach (double t in new[] { result.UntiltedSecondsMedian, result.TiltedSecondsMedian, result.NetworkSecondsMedian, result.BareRunLoopSecondsMedian })
            Assert.True(t > 0 && double.IsFinite(t));
        // The network's time is part of the run's.
        Assert.True(result.NetworkSecondsMedian <= result.UntiltedSecondsMedian);
        Assert.Equal(result.TiltedSecondsMedian / result.UntiltedSecondsMedian, result.TiltedOverUntilted);
        Assert.Equal(result.Batch / result.UntiltedSecondsMedian, result.SamplesPerSecondUntilted);
        Assert.Equal(result.UntiltedSecondsMedian / result.BareRunLoopSecondsMedian, result.SamplingOverBareRunLoop);
        // An image model: one prox workload per oracle structure, each picked from the reward's structure.
        Assert.Equal(["linear-closed-form", "low-rank-newton", "lipschitz-branch-and-bound"], result.Prox.Select(p => p.Algorithm));
        Assert.All(result.Prox, p => Assert.True(p.SamplesPerSecond > 0 && p.PerSampleOverNetworkEvaluation > 0));
        Assert.Null(result.Throughput);
        Assert.True(result.PeakWorkingSetMb > 0);

        // bench --out's JSON, key for key (no throughput without the sweep; the CLI appends pytorch).
        Assert.Equal(["model", "machine", "device", "onnxruntime", "host_buffers", "network_element_type", "steps", "batch", "repeats",
                      "untilted_seconds_median", "tilted_seconds_median", "network_seconds_median", "tilted_over_untilted", "sampling_over_network",
                      "samples_per_second_untilted", "prox", "bare_run_loop_seconds_median", "sampling_over_bare_run_loop", "peak_working_set_mb"], Keys(result));
        Assert.Equal(["reward", "lambda", "algorithm", "samples_per_second", "per_sample_over_network_evaluation"], Keys(result.Prox[0]));
        Assert.Equal(["threads", "batch", "samples_per_second"], Keys(new ThroughputPoint(1, 4, 2.0)));
    }

    [Fact]
    public void BenchSaysTheLibrarysRefusalsAsItsFlags()
    {
        var (code, _, stderr) = CliTests.Onnxalign("bench", Fashion, "--black-box", "--particles", "100");
        Assert.Equal(2, code);
        Assert.Equal("error: --particles 100: expected a multiple of 64", stderr.Trim());
        (code, _, stderr) = CliTests.Onnxalign("bench", TestSupport.Toy("tiny-unet"), "--kl-mixture");
        Assert.Equal(2, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Contains("no mixture.json", stderr);
    }
}
