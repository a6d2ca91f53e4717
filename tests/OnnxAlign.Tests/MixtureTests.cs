using Xunit.Abstractions;
using OnnxAlign.ModelForge;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>KL alignment to convex low-rank rewards by mixtures of exact tilts (DESIGN §2) against quadrature ground truth.</summary>
public class MixtureTests(ITestOutputHelper output, ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private const int Count = 2000;

    // Kolmogorov–Smirnov critical value at level 0.001 for n samples (1.95/√n), plus the grid ground truth's own
    // interpolation error (< 1e-3) and the sampler's discretisation error, which the exact-tilt tests bound (DDIM 100 steps).
    private static double KsTolerance(int n) => 1.95 / Math.Sqrt(n) + 0.01;

    public static TheoryData<string, int, string, double, string> Cases() => new()
    {
        // reward features, f, λ, expected method
        { "k1", 1, "softplus:0.5", 0.5, nameof(MixtureMethod.TangentMixture) },
        { "k1", 1, "softplus:0.5", 0.15, nameof(MixtureMethod.TangentMixture) },
        { "k1", 1, "sq-dist:1", 2.0, nameof(MixtureMethod.HubbardStratonovich) },
        { "k2", 2, "max", 0.5, nameof(MixtureMethod.TangentMixture) },
        { "k2", 2, "max", 0.2, nameof(MixtureMethod.TangentMixture) },
        { "k2", 2, "logsumexp:0.5", 0.5, nameof(MixtureMethod.ExactMixture) },
        { "k2", 2, "variance", 1.0, nameof(MixtureMethod.HubbardStratonovich) },
    };

    /// <summary>k = 1: z = ⟨(0.6, 0.8), x⟩; k = 2: z = x.</summary>
    internal static FeatureReward Gmm2dReward(int k, string function) => k == 1
        ? new FeatureReward($"test:{function}", [0.6f, 0.8f], 1, FeatureFunction.Parse(function, 1))
        : new FeatureReward($"test:{function}", [1f, 0f, 0f, 1f], 2, FeatureFunction.Parse(function, 2));

    [Theory]
    [MemberData(nameof(Cases))]
    public void Gmm2dMixtureMatchesTheQuadratureGroundTruth(string label, int k, string function, double lambda, string method)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var reward = Gmm2dReward(k, function);
        var sampler = new TiltMixtureSampler(denoiser, Sampler.Create("ddim", model.Config, 100), reward, lambda);
        Assert.Equal(method, sampler.Method.ToString());
        var result = sampler.Sample(Count, seed: 5);
        var truth = new FeatureGridLaw(ToyModels.Gmm2d, reward, z => reward.Function.Value(z) / lambda, -8, 8, k == 1 ? 4001 : 401);

        output.WriteLine($"{label} {function} λ={lambda}: {result.Method}, {result.Components.Count} terms, ε={result.Epsilon:F3}, " +
                         $"acceptance {result.AcceptanceRate:F3}, violations {result.EnvelopeViolations}, {result.EvaluationsPerAccepted:F0} evals/accepted");
        Assert.Equal(Count, result.Count);
        for (int j = 0; j < k; j++)
        {
            var values = result.Features.Select(z => z[j]).ToArray();
            double ks = Numerics.KolmogorovSmirnov(values, v => truth.MarginalCdf(j, v));
            var (mean, se) = LogPartition.MeanAndStandardError(values);
            output.WriteLine($"  z{j}: mean {mean:F4} ± {se:F4} (truth {truth.Mean[j]:F4}), KS {ks:F4} (tolerance {KsTolerance(Count):F4})");
            Assert.InRange(ks, 0, KsTolerance(Count));
            Assert.InRange(mean, truth.Mean[j] - 4.5 * se - 0.01, truth.Mean[j] + 4.5 * se + 0.01);
        }
        Assert.True(result.EnvelopeViolations <= Count / 100, $"{result.EnvelopeViolations} envelope violations");
    }

    /// <summary>
    /// A strong tilt (softplus at λ = 0.05 pushes z eight base standard deviations out): the mixture still matches the
    /// ground truth, while importance resampling from p with the same number of network evaluations does not.
    /// </summary>
    [Fact]
    public void StrongTiltWhereImportanceResamplingFails()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var reward = Gmm2dReward(1, "softplus:0.5");
        const double lambda = 0.05;
        var ddim = Sampler.Create("ddim", model.Config, 100);
        var mixture = new TiltMixtureSampler(denoiser, ddim, reward, lambda).Sample(Count, seed: 8);
        var truth = new FeatureGridLaw(ToyModels.Gmm2d, reward, z => reward.Function.Value(z) / lambda, -8, 12, 8001);
        double mixtureKs = Numerics.KolmogorovSmirnov(mixture.Features.Select(z => z[0]), v => truth.MarginalCdf(0, v));

        int proposals = (int)(mixture.NetworkEvaluations / ddim.Steps);
        var sir = Baselines.ImportanceResampling(denoiser, ddim, reward, lambda, proposals, Count, seed: 8);
        var z = new double[1];
        var sirValues = Enumerable.Range(0, Count).Select(i => { reward.Project(sir.Samples.AsSpan(i * 2, 2), z); return z[0]; });
        double sirKs = Numerics.KolmogorovSmirnov(sirValues, v => truth.MarginalCdf(0, v));
        output.WriteLine($"mixture: KS {mixtureKs:F4}, {mixture.NetworkEvaluations} evaluations, acceptance {mixture.AcceptanceRate:F3}; " +
                         $"SIR with {proposals} proposals: KS {sirKs:F4}, ESS {sir.EffectiveSampleSize:F1}");
        Assert.InRange(mixtureKs, 0, KsTolerance(Count));
        Assert.True(sirKs > KsTolerance(Count), $"importance resampling should fail here (KS {sirKs:F4})");
        Assert.True(sir.EffectiveSampleSize < Count / 10.0, $"ESS {sir.EffectiveSampleSize}");
    }

    /// <summary>gmm-image (64 dimensions), k = 2 orthonormal features through the three patterns, f = max and an exact log-sum-exp.</summary>
    [Theory]
    [InlineData("max", 0.25)]
    [InlineData("logsumexp:0.3", 0.3)]
    public void GmmImageMixtureMatchesTheGroundTruth(string function, double lambda)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var denoiser = sessions.Denoiser(model);
        var mu = ToyModels.GmmImage.Means;
        // Gram–Schmidt on (μ1 − μ0, μ2 − μ0), scaled to unit norm.
        var e1 = Normalise(mu[1].Zip(mu[0], (a, b) => a - b).ToArray());
        var d2 = mu[2].Zip(mu[0], (a, b) => a - b).ToArray();
        double along = d2.Zip(e1, (a, b) => a * b).Sum();
        var e2 = Normalise(d2.Zip(e1, (a, b) => a - along * b).ToArray());
        var reward = new FeatureReward(function, e1.Concat(e2).Select(v => (float)v).ToArray(), 2, FeatureFunction.Parse(function, 2));
        var result = new TiltMixtureSampler(denoiser, Sampler.Create("ddim", model.Config, 50), reward, lambda).Sample(Count, seed: 3);
        var truth = new FeatureGridLaw(ToyModels.GmmImage, reward, z => reward.Function.Value(z) / lambda, -10, 10, 401);
        output.WriteLine($"{function} λ={lambda}: {result.Method}, {result.Components.Count} terms, acceptance {result.AcceptanceRate:F3}");
        for (int j = 0; j < 2; j++)
        {
            double ks = Numerics.KolmogorovSmirnov(result.Features.Select(z => z[j]), v => truth.MarginalCdf(j, v));
            output.WriteLine($"  z{j}: KS {ks:F4}, mean {result.Features.Average(z => z[j]):F4} (truth {truth.Mean[j]:F4})");
            Assert.InRange(ks, 0, KsTolerance(Count));
        }
    }

    /// <summary>
    /// The acceptance step is what makes the law exact, and the tests can tell: with one tangent (a single tilt at the
    /// base mean's gradient) the proposal is far from q; rejection still gives q, accepting every proposal does not.
    /// </summary>
    [Fact]
    public void OneTangentWithRejectionIsExactWithoutItIsNot()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var reward = Gmm2dReward(1, "softplus:0.5");
        const double lambda = 0.3;
        var ddim = Sampler.Create("ddim", model.Config, 100);
        var truth = new FeatureGridLaw(ToyModels.Gmm2d, reward, z => reward.Function.Value(z) / lambda, -8, 8, 4001);
        double Ks(TiltMixtureResult r) => Numerics.KolmogorovSmirnov(r.Features.Select(z => z[0]), v => truth.MarginalCdf(0, v));

        var crude = new TiltMixtureSampler(denoiser, ddim, reward, lambda, new TiltMixtureSettings { MaxTangents = 1 }).Sample(Count, seed: 5);
        // ε = −∞ accepts every proposal.
        var acceptAll = new TiltMixtureSampler(denoiser, ddim, reward, lambda,
            new TiltMixtureSettings { MaxTangents = 1, EpsilonMargin = double.NegativeInfinity }).Sample(Count, seed: 5);
        output.WriteLine($"one tangent: KS {Ks(crude):F4}, acceptance {crude.AcceptanceRate:F3}; accept-all KS {Ks(acceptAll):F4}");
        Assert.Single(crude.Components);
        Assert.InRange(Ks(crude), 0, KsTolerance(Count));
        Assert.True(Ks(acceptAll) > KsTolerance(Count), $"KS {Ks(acceptAll):F4}");
    }

    /// <summary>
    /// An interrupted run resumes from its saved set-up and finished batches to exactly the samples (and proposal counts)
    /// of an uninterrupted run, repeating neither the set-up nor the saved batches' proposals.
    /// </summary>
    [Fact]
    public void InterruptedRunResumesToTheSameSamplesWithoutRepeatingWork()
    {
        const int count = 500, seed = 9;
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var mixture = new TiltMixtureSampler(denoiser, Sampler.Create("ddim", model.Config, 50), Gmm2dReward(1, "softplus:0.5"), 0.3,
                                             new TiltMixtureSettings { BatchSize = 64 });
        var request = new GenerationRequest { Count = count, BatchSize = 64, Seed = seed };
        var envelope = mixture.Prepare(seed);
        var whole = mixture.Sample(request, envelope);

        string dir = TestSupport.TempDirectory();
        var store = BatchCheckpoint.Start(dir, "run");
        store.WriteNote("mixture.json", envelope.ToJson());
        // Cancelled after two batches of 64 samples (a kill between batches).
        using var cancel = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => mixture.Sample(request with { Checkpoint = store, Cancellation = cancel.Token }, envelope,
            p => { if (p.SamplesDone >= 128) cancel.Cancel(); }));
        Assert.Equal(2, store.SavedBatches);

        var reopened = BatchCheckpoint.Resume(dir, "run");
        var saved = MixtureEnvelope.FromJson(reopened.ReadNote("mixture.json")!, "mixture.json");
        Assert.Equal(envelope.Components.Select(c => c.Weight), saved.Components.Select(c => c.Weight)); // exact round trip
        var resumed = mixture.Sample(request with { Checkpoint = reopened }, saved);
        Assert.Equal(whole.Samples, resumed.Samples);
        Assert.Equal(whole.Proposed, resumed.Proposed);
        Assert.Equal(whole.EnvelopeViolations, resumed.EnvelopeViolations);
        // The saved batches were read, not sampled: the first 128 samples cost what a run of 128 costs (sample i depends on i only).
        var firstTwo = mixture.Sample(request with { Count = 128 }, envelope);
        Assert.Equal(whole.SamplingEvaluations - firstTwo.SamplingEvaluations, resumed.SamplingEvaluations);
        Assert.Throws<ConfigException>(() => MixtureEnvelope.FromJson("{\"Method\": \"ExactMixture\"}", "broken.json"));
    }

    /// <summary>
    /// DESIGN §10 for the mixture: sample i is the first accepted proposal of its own stream, so three shards with another
    /// batch size are the whole run's samples, and their proposal counts add up to the whole run's.
    /// </summary>
    [Fact]
    public void ASampleDependsOnItsIndexOnlyNotOnTheBatchOrTheShard()
    {
        const int count = 60, seed = 4;
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var mixture = new TiltMixtureSampler(denoiser, Sampler.Create("ddim", model.Config, 20), Gmm2dReward(2, "max"), 0.3,
                                             new TiltMixtureSettings { BatchSize = 16, PilotSamples = 128 });
        var envelope = mixture.Prepare(seed);
        var whole = mixture.Sample(new GenerationRequest { Count = count, BatchSize = 16, Seed = seed }, envelope);
        Assert.True(whole.Proposed > count, "the test needs rejections");
        var shards = Enumerable.Range(0, 3)
            .Select(i => mixture.Sample(new GenerationRequest { Count = count, BatchSize = 7, Seed = seed, Shard = new Shard(i, 3) }, envelope)).ToList();
        Assert.Equal(whole.Samples, shards.SelectMany(s => s.Samples));
        Assert.Equal(Enumerable.Range(0, count), shards.SelectMany(s => s.Generated.Indices));
        Assert.Equal(whole.Proposed, shards.Sum(s => s.Proposed));
        Assert.Equal(whole.SamplingEvaluations, shards.Sum(s => s.SamplingEvaluations));
    }

    /// <summary>The network, but NaN for rows with x₀ &gt; 3 near the end of sampling (a fault that depends on the sample).</summary>
    private sealed class FaultyDenoiser(IDenoiser inner) : IDenoiser
    {
        public IReadOnlyList<int> SampleShape => inner.SampleShape;
        public int SampleSize => inner.SampleSize;
        public NoiseSchedule Schedule => inner.Schedule;

        public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
        {
            inner.PredictNoise(x, batchSize, timestep, noise);
            for (int b = 0; b < batchSize && timestep < 50; b++)
                if (x[b * SampleSize] > 3f) noise[b * SampleSize] = float.NaN;
        }
    }

    /// <summary>A proposal that turns NaN stops the run with the samples accepted before it, or is dropped (--on-nan).</summary>
    [Fact]
    public void NonFiniteProposalsStopTheRunOrAreDropped()
    {
        const int count = 500, seed = 6;
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var ddim = Sampler.Create("ddim", model.Config, 50);
        var reward = Gmm2dReward(1, "softplus:0.5");
        var healthy = new TiltMixtureSampler(denoiser, ddim, reward, 0.3);
        var envelope = healthy.Prepare(seed);
        var clean = healthy.Sample(count, seed, envelope: envelope);
        var faulty = new TiltMixtureSampler(new FaultyDenoiser(denoiser), ddim, reward, 0.3);

        var stop = Assert.Throws<NonFiniteException>(() => faulty.Sample(count, seed, envelope));
        var skip = faulty.Sample(count, seed, envelope, NonFinitePolicy.Skip);
        output.WriteLine($"stopped at sample {stop.SampleIndex} with {stop.Finished.Count} finished; skip dropped {skip.Skipped.Count} of {count} samples ({skip.Proposed} proposals)");
        Assert.NotEmpty(skip.Skipped);
        // Stop halts at a faulty sample of the first batch that has one (which one depends on the order of its proposals).
        int batch = healthy.Settings.BatchSize;
        Assert.Contains(stop.SampleIndex, skip.Skipped);
        Assert.Equal(skip.Skipped[0] / batch, stop.SampleIndex / batch);
        Assert.Equal(stop.SampleIndex / batch * batch, stop.Finished.Count);
        Assert.Equal(count - skip.Skipped.Count, skip.Count);
        Assert.All(skip.Samples, v => Assert.True(float.IsFinite(v)));
        // Stop keeps the whole batches before the faulty sample's, as the clean run drew them.
        int before = stop.Finished.Count * 2;
        Assert.Equal(clean.Samples.Take(before), stop.Finished.Samples.Take(before));
        // Skip drops only the samples whose proposals turned NaN/±∞; every other sample is the clean run's of that index.
        var kept = skip.Generated.Indices;
        Assert.Equal(kept.SelectMany(i => clean.Samples.Skip(i * 2).Take(2)), skip.Samples);
    }

    private static double[] Normalise(double[] v)
    {
        double norm = Math.Sqrt(v.Sum(a => a * a));
        return v.Select(a => a / norm).ToArray();
    }
}
