using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Sampling;
using OnnxAlign.ModelForge;

namespace OnnxAlign.Tests;

public class GenerationTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private float[] Run(string sampler, int batch, double eta = 0, Shard? shard = null, int count = 37, long seed = 3)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        return Generation.Run(denoiser, Sampler.Create(sampler, model.Config, 20, eta),
            new GenerationRequest { Count = count, BatchSize = batch, Seed = seed, Shard = shard ?? Shard.Whole }).Samples;
    }

    [Fact]
    public void DdimEtaZeroIsDeterministic()
    {
        Assert.Equal(Run("ddim", 8), Run("ddim", 8));
        Assert.NotEqual(Run("ddim", 8), Run("ddim", 8, seed: 4));
    }

    [Theory]
    [InlineData("ddpm")]
    [InlineData("ddim")]
    [InlineData("euler-maruyama")]
    [InlineData("dpm++2m")]
    public void ResultsDoNotDependOnBatchSize(string sampler)
    {
        double eta = sampler == "ddim" ? 1.0 : 0.0;
        var whole = Run(sampler, 37, eta);
        TestSupport.AssertClose(whole, Run(sampler, 5, eta));
        TestSupport.AssertClose(whole, Run(sampler, 1, eta));
    }

    [Fact]
    public void ShardsConcatenateToTheWholeRun()
    {
        var whole = Run("ddpm", 16);
        var parts = Enumerable.Range(0, 3).SelectMany(i => Run("ddpm", 16, shard: new Shard(i, 3))).ToArray();
        TestSupport.AssertClose(whole, parts);
        Assert.Equal((12, 12), new Shard(1, 3).Range(37));
        Assert.Throws<ConfigException>(() => Shard.Parse("3/3"));
        Assert.Throws<ConfigException>(() => Shard.Parse("a/b"));
    }

    [Fact]
    public void InitialNoiseIsUsedAsGiven()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddim", model.Config, 20);
        var init = new NpyArray([0.5f, -0.5f, 1f, 2f], [2, 2]);
        var a = Generation.Run(denoiser, sampler, new GenerationRequest { Count = 2, InitialNoise = init, Seed = 1 }).Samples;
        var b = Generation.Run(denoiser, sampler, new GenerationRequest { Count = 2, InitialNoise = init, Seed = 99 }).Samples;
        Assert.Equal(a, b); // DDIM η=0 from the same x_T: the seed no longer matters
        var x = init.Data.ToArray();
        sampler.Sample(denoiser, x, 2, [new NoiseStream(1, 0), new NoiseStream(1, 1)]);
        Assert.Equal(x, a);
        Assert.Throws<ConfigException>(() => Generation.Run(denoiser, sampler, new GenerationRequest { Count = 3, InitialNoise = init }));
    }

    [Fact]
    public void FixedBatchAndTimestepConventionsGiveTheSameOutputs()
    {
        // The same network exported with a fixed batch of 3, an int64 scalar timestep, or a float [B] timestep.
        var reference = Run("ddim", 37);
        var exports = new[]
        {
            new GmmExport { SampleShape = [2], FixedBatch = 3 },
            new GmmExport { SampleShape = [2], ScalarTimestep = true },
            new GmmExport { SampleShape = [2], TimestepType = OnnxType.Float },
            new GmmExport { SampleShape = [2], TimestepType = OnnxType.Int32, Conditioning = true },   // zeros bound once, on the device
            new GmmExport { SampleShape = [2], FixedBatch = 3, Conditioning = true },
        };
        foreach (var export in exports)
        {
            using var denoiser = OpenExport(export, out var model);
            Assert.Equal(export.FixedBatch, denoiser.FixedBatchSize);
            var samples = Generation.Run(denoiser, Sampler.Create("ddim", model.Config, 20), new GenerationRequest { Count = 37, BatchSize = 37, Seed = 3 }).Samples;
            TestSupport.AssertClose(reference, samples);
        }
    }

    [Fact]
    public void HalfPrecisionExportsRunInFloat16AndStayCloseToFloat32()
    {
        // The same network with float16 sample and output (and a float16 timestep): the sampler stays in float32, and
        // only the crossings into and out of the network round to float16.
        const int steps = 20;
        var reference = Run("ddim", 37);
        foreach (var export in new[]
        {
            new GmmExport { SampleShape = [2], HalfPrecisionIo = true },
            new GmmExport { SampleShape = [2], HalfPrecisionIo = true, TimestepType = OnnxType.Float16, FixedBatch = 3 },
        })
        {
            using var denoiser = OpenExport(export, out var model);
            Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16, denoiser.SampleElementType);
            var samples = Generation.Run(denoiser, Sampler.Create("ddim", model.Config, steps), new GenerationRequest { Count = 37, BatchSize = 37, Seed = 3 }).Samples;
            double worst = reference.Zip(samples).Max(p => Math.Abs(p.First - p.Second) / (1 + Math.Abs(p.First)));
            // Each step rounds the network's input and output once, a relative error of at most u = 2⁻¹¹ each; DDIM's
            // update coefficients are at most 1 in size, so the first-order bound after n steps is 2·n·u.
            Assert.True(worst <= 2 * steps * Math.Pow(2, -11), $"float16 export strays {worst:G3} from float32");
            Assert.True(worst > 0, "no rounding seen: the float16 sample was not used");
        }
    }

    private static OnnxDenoiser OpenExport(GmmExport export, out DiffusionModel model)
    {
        string dir = TestSupport.TempDirectory();
        File.WriteAllBytes(Path.Combine(dir, "net.onnx"), ToyModels.GmmNetwork(ToyModels.Gmm2d, ToyModels.Gmm2dConfig, export));
        File.WriteAllText(Path.Combine(dir, "net.scheduler_config.json"), ToyModels.Gmm2dConfig);
        model = DiffusionModel.Locate(Path.Combine(dir, "net.onnx"));
        return model.OpenDenoiser();
    }

    [Fact]
    public void ToyModelsRegenerateByteForByte()
    {
        string dir = TestSupport.TempDirectory();
        foreach (var file in ToyModels.WriteAll(dir))
        {
            string committed = Path.Combine(TestSupport.RepositoryRoot, "models", "toy", Path.GetRelativePath(dir, file));
            Assert.True(File.ReadAllBytes(committed).AsSpan().SequenceEqual(File.ReadAllBytes(file)), $"{committed} differs from what ModelForge writes");
        }
    }

    [Fact]
    public void TinyUnetRunsWithImageShapes()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("tiny-unet"));
        var denoiser = sessions.Denoiser(model, new DenoiserOptions { IntraOpThreads = 1 });
        Assert.Equal([3, 32, 32], denoiser.SampleShape);
        var samples = TestSupport.Generate(denoiser, Sampler.Create(null, model.Config, 3), 3, batch: 2);
        Assert.Equal(3 * 3 * 32 * 32, samples.Length);
        Assert.All(samples, v => Assert.True(float.IsFinite(v)));
    }
}
