using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>fit-reward's and quality's library side (issue #16): one entry point each, and typed records for their JSON.</summary>
public sealed class FitAndQualityLibraryTests
{
    private static string Fashion => Path.Combine(TestSupport.RepositoryRoot, "models", "fashion");
    private static string Classifier => Path.Combine(Fashion, "classifier");
    private static readonly int[] FashionShape = [1, 32, 32];

    [Fact]
    public void RewardFitRunFitsOnTheBaseSamplesAndItsFolderReadsBackAsTheFittedReward()
    {
        var model = DiffusionModel.Locate(Fashion);
        using var denoiser = model.OpenDenoiser();
        using var network = (OnnxReward)RewardSpec.Parse($"onnx:{Classifier}@Trouser", FashionShape, Fashion);
        var sampler = Sampler.Create(null, model.Config, 3);
        var request = new GenerationRequest { Count = 16, BatchSize = 8, Seed = 5 };
        int reported = 0;
        var run = RewardFit.Run(denoiser, model.DataRange, sampler, network, request, RewardFitForm.Linear, heldOut: 0.25, ridge: 1e-2,
                                progress: new Progress(() => reported++));
        Assert.True(reported > 0);

        // The same as generating the base samples and fitting on them.
        var samples = Generation.Run(ExactTilt.BaseLaw(denoiser, model.DataRange), sampler, request);
        var fit = RewardFit.Fit(network, samples.Samples, RewardFitForm.Linear, 0.25, 1e-2);
        Assert.Equal(fit.W, run.Fit.W);
        Assert.Equal(fit.B, run.Fit.B);
        Assert.Equal(RewardFitSource.Generated(16, sampler, 5, samples.NetworkEvaluations), run.Source);

        string dir = TestSupport.TempDirectory();
        var report = RewardFitReport.Of(network, run.Fit, RewardFitForm.Linear, 1e-2, run.Source, dir);
        Assert.Equal($"class:fitted@{dir}", report.UseAs);
        var node = ReportJson.ToNode(report).AsObject();
        Assert.Equal(new[] { "reward", "form", "use_as", "rows", "source", "ridge", "train_samples", "held_out_samples", "held_out_r_squared",
                             "held_out_correlation", "held_out_argmax_agreement", "train_r_squared" }, node.Select(p => p.Key));
        Assert.Equal(new[] { "base_samples", "sampler", "steps", "seed", "network_evaluations" }, node["source"]!.AsObject().Select(p => p.Key));
        Assert.Equal(report, ReportJson.FromNode<RewardFitReport>(node));   // the record round-trips

        Assert.Equal(new[] { "W.npy", "b.npy", "classes.json", "fit.json" }, RewardFit.WriteFolder(dir, run.Fit, report));
        Assert.True(JsonNode.DeepEquals(node, JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "fit.json")))));
        var fitted = RewardSpec.ParseLinear(report.UseAs, FashionShape, null);
        var x = samples.Samples.AsSpan(0, 1024);
        Assert.Equal(System.Numerics.Tensors.TensorPrimitives.Dot(run.Fit.W, x) + run.Fit.B[0], fitted.Evaluate(x), 1e-4);

        // Given samples are reported as such; the log-prob form of a card without log_softmax is refused before any sample is drawn.
        Assert.Equal(new[] { "samples", "count" }, ReportJson.ToNode(RewardFitSource.GivenSamples("x.npy", 9)).AsObject().Select(p => p.Key));
        var cancelled = request with { Cancellation = new CancellationToken(canceled: true) };
        Assert.Equal("form", Assert.Throws<ConfigException>(() => RewardFit.Run(denoiser, model.DataRange, sampler, network, cancelled, RewardFitForm.LogProb)).Parameter);
        Assert.Throws<ArgumentOutOfRangeException>(() => RewardFit.Run(denoiser, model.DataRange, sampler, network, request with { Count = 7 }, RewardFitForm.Linear));
    }

    /// <summary>The typed quality report is what <c>quality --samples … --out</c> writes, node for node.</summary>
    [Fact]
    public void TheTypedQualityReportIsWhatQualityWrites()
    {
        var model = DiffusionModel.Locate(Fashion);
        string dir = TestSupport.TempDirectory(), file = Path.Combine(dir, "samples.npy"), json = Path.Combine(dir, "quality.json");
        using (var denoiser = model.OpenDenoiser())
        {
            var run = Generation.Run(denoiser, Sampler.Create(null, model.Config, 3), new GenerationRequest { Count = 12, Seed = 2 });
            NpyFile.Write(file, run.Samples, [12, 1, 32, 32]);
        }
        var (code, _, stderr) = CliTests.Onnxalign("quality", Fashion, "--samples", file, "--out", json);
        Assert.True(code == 0, stderr);

        string evaluatorDirectory = Path.Combine(Fashion, "evaluator");
        using var evaluator = new ImageEvaluator(evaluatorDirectory, null, FashionShape, model.DataRange);
        var set = SampleSetReader.Read(file);
        var measured = SampleQuality.Evaluate(evaluator, set.Samples, set.Count);
        var node = ReportJson.ToNode(QualityReport.Of(model.OnnxPath, QualityGeneration.Given(file), measured));
        Assert.True(JsonNode.DeepEquals(node, JsonNode.Parse(File.ReadAllText(json))), $"library:\n{node}\nfile:\n{File.ReadAllText(json)}");

        Assert.Equal(evaluator.ClassNames, node["class_shares"]!.AsObject().Select(p => p.Key));   // class names as they are
        Assert.Equal(1.0, measured.Samples.ClassShares.Sum(), 9);
        Assert.NotNull(measured.RealFloor);   // the evaluator folder's real images are of the samples' shape
        Assert.Equal(FeatureStatistics.ReferenceCount, (int)node["reference_count"]!);
        Assert.True((double)node["frechet_distance"]! > (double)node["real_floor"]!["frechet_distance"]!);
        Assert.Equal(new[] { "samples" }, node["generation"]!.AsObject().Select(p => p.Key));
    }

    [Fact]
    public void QualityRunGeneratesAndMeasuresWhatTheEvaluatorSees()
    {
        var model = DiffusionModel.Locate(Fashion);
        using var opened = ConditionedModel.Open(model);
        using var evaluator = new ImageEvaluator(Classifier, null, opened.OutputShape, model.DataRange);
        var sampler = Sampler.Create(null, model.Config, 2);
        var request = new GenerationRequest { Count = 6, Seed = 4 };
        var run = SampleQuality.Run(opened, sampler, request, evaluator);
        var samples = Generation.Run(opened.Denoiser, sampler, request);
        var direct = SampleQuality.Evaluate(evaluator, samples.Samples, samples.Count);
        Assert.Equal(direct.Samples.ClassShares, run.Measurement.Samples.ClassShares);
        Assert.Equal(direct.Samples.MeanConfidence, run.Measurement.Samples.MeanConfidence);
        Assert.Null(run.Measurement.Samples.FrechetDistance);   // the linear classifier has no features
        Assert.Null(run.Measurement.Reference);
        Assert.Equal(new[] { "sampler", "steps", "seed", "seconds" }, ReportJson.ToNode(run.Generation).AsObject().Select(p => p.Key));
        Assert.Equal((sampler.Name, 2, 4L), (run.Generation.Sampler, run.Generation.Steps, run.Generation.Seed));

        using var small = new ImageEvaluator(Classifier, null, [1, 32, 32]);
        var wrong = ConditionedModel.Open(DiffusionModel.Locate(TestSupport.Toy("gmm2d")));
        using (wrong) Assert.Equal("evaluator", Assert.Throws<ArgumentException>(() => SampleQuality.Run(wrong, sampler, request, small)).ParamName);
    }

    [Fact]
    public void ReferenceStatisticsRoundTripAndANonFiniteFigureIsNull()
    {
        string dir = TestSupport.TempDirectory();
        Assert.Null(FeatureStatistics.ReadReference(dir));
        var stats = new FeatureStatistics([1, 2], [2, 0.5, 0.5, 1], 3);
        stats.WriteReference(dir);
        var read = FeatureStatistics.ReadReference(dir)!;
        Assert.Equal(stats.Mean, read.Mean);
        Assert.Equal(stats.Covariance, read.Covariance);
        Assert.Equal(FeatureStatistics.ReferenceCount, read.Count);
        Assert.Equal(0, read.FrechetDistance(stats), 6);
        File.Delete(Path.Combine(dir, FeatureStatistics.ReferenceCovarianceFile));
        var error = Assert.Throws<ConfigException>(() => FeatureStatistics.ReadReference(dir));
        Assert.Contains(OnnxAlignException.Option("referenceImages"), error.Message);   // the CLI says it as its command

        var quality = new SampleQuality([0.5, 0.5], 0.9, double.NaN, 2);
        var report = QualityReport.Of("m.onnx", QualityGeneration.Given("s.npy"), new QualityMeasurement(quality, null, null, ["a", "b"]));
        var node = ReportJson.ToNode(report);
        Assert.True(node.AsObject().ContainsKey("frechet_distance"));
        Assert.Null(node["frechet_distance"]);
        Assert.Null(node["real_floor"]);
    }

    private sealed class Progress(Action report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report();
    }
}
