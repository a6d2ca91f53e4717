using OnnxAlign.Alignment;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>A cancelled long call stops within one network call (issue #16): between calls for any denoiser, and
/// inside a running ONNX call through <c>RunOptions.Terminate</c>.</summary>
public sealed class CancellationTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    /// <summary>Counts the calls that finished, and cancels when the given call starts (or a delay after it starts).</summary>
    private sealed class CountingDenoiser(IDenoiser inner, int cancelAtCall, CancellationTokenSource source, TimeSpan? delay = null) : IDenoiser
    {
        public int Started, Finished;
        public IReadOnlyList<int> SampleShape => inner.SampleShape;
        public int SampleSize => inner.SampleSize;
        public NoiseSchedule Schedule => inner.Schedule;

        public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
        {
            if (++Started == cancelAtCall)
            {
                // A thread of its own, not a timer: a busy thread pool (the suite runs in parallel) could delay a timer past the call.
                if (delay is { } d) new Thread(() => { Thread.Sleep(d); source.Cancel(); }) { IsBackground = true }.Start();
                else source.Cancel();
            }
            inner.PredictNoise(x, batchSize, timestep, noise);
            Finished++;
        }
    }

    [Fact]
    public void GenerationStopsAtTheNextNetworkCall()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var network = sessions.Denoiser(model);
        using var source = new CancellationTokenSource();
        var counting = new CountingDenoiser(network, cancelAtCall: 5, source);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 20);
        Assert.ThrowsAny<OperationCanceledException>(() =>
            Generation.Run(counting, sampler, new GenerationRequest { Count = 64, BatchSize = 8, Cancellation = source.Token }));
        // The fifth call cancelled while it ran; the ONNX call inside it saw the token and no sixth call started.
        Assert.Equal(5, counting.Started);
        Assert.Equal(4, counting.Finished);
    }

    [Fact]
    public void TheExactTiltStopsAtTheNextNetworkCall()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var network = sessions.Denoiser(model);
        using var source = new CancellationTokenSource();
        var counting = new CountingDenoiser(network, cancelAtCall: 30, source);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 20);
        var theta = new float[network.SampleSize];
        theta[0] = 1;
        Assert.ThrowsAny<OperationCanceledException>(() =>
            ExactTilt.Sample(counting, null, sampler, theta, new ExactTiltSettings { Count = 16 }, cancellation: source.Token));
        Assert.Equal(30, counting.Started);
    }

    /// <summary>
    /// The constrained dual (issue #16) enters its token for every network call below it: a cancel in the first tilted
    /// iterate (call 25, after the 20 calls of the base batch) stops it there; through <see cref="ConstrainedAlignment.Run"/>
    /// the request's token does the same.
    /// </summary>
    [Fact]
    public void AConstrainedSolveStopsAtTheNextNetworkCall()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 10);
        var constraints = new[] { Constraint.Parse("brightness>=mean+1std", network.SampleShape, model.Directory) };
        var settings = new ConstrainedSettings { SamplesPerIteration = 32, BatchSize = 16, Seed = 1, FinalMode = KlTiltMode.Fast };

        using var source = new CancellationTokenSource();
        var counting = new CountingDenoiser(network, cancelAtCall: 25, source);
        Assert.ThrowsAny<OperationCanceledException>(() => ConstrainedAlignment.Solve(counting, sampler, constraints, settings, cancellation: source.Token));
        Assert.Equal(25, counting.Started);
        Assert.Equal(24, counting.Finished);

        using var second = new CancellationTokenSource();
        var run = new CountingDenoiser(network, cancelAtCall: 5, second);
        Assert.ThrowsAny<OperationCanceledException>(() => ConstrainedAlignment.Run(run, model.DataRange, sampler, constraints, settings,
            new GenerationRequest { Count = 8, BatchSize = 8, Cancellation = second.Token }));
        Assert.Equal(5, run.Started);
        Assert.Equal(4, run.Finished);
    }

    /// <summary>Dual averaging (DESIGN §5) likewise: a cancel at call 15 (in its second 10-step batch) stops it there.</summary>
    [Fact]
    public void DualAveragingStopsAtTheNextNetworkCall()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 10);
        var features = (Rewards.FeatureReward)Rewards.RewardSpec.Parse("sq-dist:0.5(brightness)", network.SampleShape, model.Directory);
        using var source = new CancellationTokenSource();
        var counting = new CountingDenoiser(network, cancelAtCall: 15, source);
        Assert.ThrowsAny<OperationCanceledException>(() => DistributionalAlignment.Solve(counting, sampler, features,
            new DualAveragingSettings { SamplesPerIteration = 16, BatchSize = 16, Seed = 1 }, cancellation: source.Token));
        Assert.Equal(15, counting.Started);
        Assert.Equal(14, counting.Finished);
    }

    /// <summary>
    /// A cancel that arrives while ONNX Runtime runs one long batch (the trained UNet, batch 256: about a second on a
    /// CPU) ends that call inside ONNX Runtime (<c>RunOptions.Terminate</c>), not after it.
    /// </summary>
    [Fact]
    public void ACancelInsideARunningOnnxCallEndsIt()
    {
        var model = DiffusionModel.Locate(Path.Combine(TestSupport.RepositoryRoot, "models", "fashion"));
        using var network = model.OpenDenoiser(new DenoiserOptions());
        var sampler = Sampler.Create("ddim", model.Config, steps: 10);
        using var source = new CancellationTokenSource();
        var counting = new CountingDenoiser(network, cancelAtCall: 1, source, delay: TimeSpan.FromMilliseconds(100));
        var e = Assert.ThrowsAny<OperationCanceledException>(() =>
            Generation.Run(counting, sampler, new GenerationRequest { Count = 256, BatchSize = 256, Cancellation = source.Token }));
        Assert.Equal(1, counting.Started);
        Assert.Equal(0, counting.Finished);
        // ONNX Runtime itself ended the run: its error is the cause (a check after the call would have none).
        Assert.IsType<Microsoft.ML.OnnxRuntime.OnnxRuntimeException>(e.InnerException);
    }
}

/// <summary>The session-options seam (issue #16): the application's settings reach the ONNX Runtime session.</summary>
public sealed class SessionOptionsTests
{
    [Fact]
    public void TheApplicationConfiguresTheSession()
    {
        string optimized = Path.Combine(TestSupport.TempDirectory(), "optimized.onnx");
        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-unet"));
        int calls = 0;
        using var network = model.OpenDenoiser(new DenoiserOptions
        {
            ConfigureSession = so => { calls++; so.OptimizedModelFilePath = optimized; },
        });
        Assert.Equal(1, calls);
        Assert.True(File.Exists(optimized), "ONNX Runtime did not see the application's session option");
    }
}
