using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// Issue #16: the sweep's comparison is a library call (<see cref="AlignmentSweep.Run"/>); the CLI only prints and
/// plots. On the trained fashion model with its evaluator: what each point measures, and a cancelled sweep that
/// resumes from its checkpoint taking the finished points as they were and giving the uninterrupted sweep's figures.
/// </summary>
public sealed class AlignmentSweepTests
{
    private static AlignmentSweepSettings Settings(CancellationToken cancellation = default) => new()
    {
        Lambdas = [0.3], Count = 8, Seed = 5, Cancellation = cancellation,
        Exact = new ExactTiltSettings { MaxParticlesPerSample = 2, Smc = new SmcSettings { Seed = 5 } } with { Count = 8 },
    };

    [Fact]
    [Trait("Category", "Slow")]
    public void ASweepMeasuresEveryMethodAndAResumedOneTakesItsFinishedPoints()
    {
        var model = DiffusionModel.Locate(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion"));
        var options = new DenoiserOptions { IntraOpThreads = 1 };
        using var denoiser = model.OpenDenoiser(options);
        using var evaluator = new ImageEvaluator(Path.Combine(model.Directory, "evaluator"), options, denoiser.SampleShape, model.DataRange);
        var sampler = Sampler.Create(null, model.Config, 4);
        var reward = RewardSpec.ParseLinear("class:Trouser", denoiser.SampleShape, model.Directory);
        int target = evaluator.ClassIndex("trouser");
        Assert.Equal(Array.IndexOf(evaluator.ClassNames, "Trouser"), target);
        Assert.Equal(-1, evaluator.ClassIndex("no such class"));
        Assert.Equal("Trouser", AlignmentSweep.ClassOf("class:Trouser@models/fashion/classifier"));

        var whole = AlignmentSweep.Run(denoiser, model.DataRange, sampler, reward, evaluator, Settings() with { TargetClass = target });
        Assert.Equal(AlignmentSweep.Methods, whole.Points.Select(p => p.Method));
        Assert.Equal(0, whole.Base.RmsDistanceToBase);
        Assert.True(whole.DataVariance > 0);   // from the base samples: these settings give none
        var byMethod = whole.Points.ToDictionary(p => p.Method);
        // The exact tilt resamples SMC particles: no pairing with the base seeds, its ESS and KL instead.
        Assert.True(double.IsNaN(byMethod["kl-exact"].Figures.RmsDistanceToBase));
        Assert.True(byMethod["kl-exact"].Figures.EffectiveSampleSize > 1);
        Assert.True(byMethod["kl-exact"].Figures.KlDivergence > 0);
        // The fast tilt reports its drift per step; the prox moves the base samples without a network call.
        Assert.Equal(sampler.Steps, byMethod["kl-fast"].Drift!.Length);
        Assert.NotNull(byMethod["kl-fast"].Figures.Drifting);
        Assert.Equal(0, byMethod["w2-prox"].NetworkEvaluations);
        Assert.True(byMethod["w2-prox"].Figures.RmsDistanceToBase > 0);
        // Every aligned method raises the reward over the base samples at λ = 0.3 (the class logit moves by tens).
        foreach (var point in whole.Points) Assert.True(point.Figures.Reward > whole.Base.Reward + 1, $"{point.Method}: {point.Figures.Reward} vs base {whole.Base.Reward}");
        Assert.Equal(8 * denoiser.SampleSize, byMethod["kl-hybrid"].Grid.Length);
        Assert.Equal(whole.Points.Sum(p => p.NetworkEvaluations) + 8L * sampler.Steps, whole.NetworkEvaluations);

        // Cancelled after two points, then resumed: the two come back from the checkpoint, the rest are run again.
        string output = TestSupport.TempDirectory();
        using var cancel = new CancellationTokenSource();
        int finished = 0;
        var first = BatchCheckpoint.Start(output, "sweep test");
        Assert.ThrowsAny<OperationCanceledException>(() => AlignmentSweep.Run(denoiser, model.DataRange, sampler, reward, evaluator,
            Settings(cancel.Token) with { TargetClass = target }, first,
            new InlineProgress<SweepProgress>(p => { if (p.Point is not null && ++finished == 2) cancel.Cancel(); })));
        var recalled = new List<string>();
        var resumed = AlignmentSweep.Run(denoiser, model.DataRange, sampler, reward, evaluator, Settings() with { TargetClass = target },
            BatchCheckpoint.Resume(output, "sweep test"), new InlineProgress<SweepProgress>(p => { if (p.Recalled) recalled.Add(p.Point!.Method); }));
        Assert.Equal(["kl-exact", "kl-fast"], recalled);
        Assert.Equal(whole.Base, resumed.Base);
        // The base samples' batch is read back too: the resumed sweep spends only what it runs again.
        Assert.Equal(whole.NetworkEvaluations - 8L * sampler.Steps - whole.Points.Take(2).Sum(p => p.NetworkEvaluations), resumed.NetworkEvaluations);
        for (int i = 0; i < whole.Points.Count; i++)
        {
            Assert.Equal(whole.Points[i].Figures, resumed.Points[i].Figures);
            Assert.Equal(whole.Points[i].Grid, resumed.Points[i].Grid);
        }
    }

    [Fact]
    public void BadSettingsAreRefusedBeforeAnySample()
    {
        var model = DiffusionModel.Locate(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion"));
        using var denoiser = model.OpenDenoiser();
        using var evaluator = new ImageEvaluator(Path.Combine(model.Directory, "evaluator"));
        var sampler = Sampler.Create(null, model.Config, 4);
        var reward = RewardSpec.ParseLinear("class:Trouser", denoiser.SampleShape, model.Directory);
        foreach (var settings in new[] { Settings() with { Lambdas = [] }, Settings() with { Lambdas = [0.1, double.NaN] }, Settings() with { Count = 0 } })
            Assert.Throws<ArgumentException>(() => AlignmentSweep.Run(denoiser, model.DataRange, sampler, reward, evaluator, settings));
    }
}
