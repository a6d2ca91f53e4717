using System.Text.Json.Serialization;
using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Core;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Sampling;

namespace OnnxAlign.Evaluation;

/// <summary>Mean and covariance of evaluator features: what the Fréchet distance compares.</summary>
/// <param name="Mean">μ (F values).</param>
/// <param name="Covariance">Σ, row-major F × F.</param>
/// <param name="Count">Samples they were estimated from.</param>
public sealed record FeatureStatistics(double[] Mean, double[] Covariance, int Count)
{
    /// <summary>μ and Σ of the features of an evaluation.</summary>
    public static FeatureStatistics Of(Evaluation evaluation) =>
        new(Numerics.ColumnMeans(evaluation.Features, evaluation.FeatureCount),
            Numerics.ColumnCovariance(evaluation.Features, evaluation.FeatureCount), evaluation.Count);

    /// <summary>
    /// The Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂) (as in FID, Heusel et al. 2017):
    /// ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁^{½} Σ₂ Σ₁^{½})^{½}), with the square roots of the symmetric PSD matrices by
    /// eigendecomposition (negative round-off eigenvalues clipped to 0).
    /// </summary>
    public double FrechetDistance(FeatureStatistics other)
    {
        int f = Mean.Length;
        var a = Matrix<double>.Build.Dense(f, f, (i, j) => Covariance[i * f + j]);
        var b = Matrix<double>.Build.Dense(f, f, (i, j) => other.Covariance[i * f + j]);
        var rootA = SquareRoot(a);
        var inner = rootA * b * rootA;
        double trace = a.Trace() + b.Trace() - 2 * SquareRoot((inner + inner.Transpose()) / 2).Trace();
        double shift = 0;
        for (int i = 0; i < f; i++) shift += (Mean[i] - other.Mean[i]) * (Mean[i] - other.Mean[i]);
        return shift + trace;
    }

    /// <summary>The reference statistics' mean in an evaluator folder.</summary>
    public const string ReferenceMeanFile = "reference_mean.npy";

    /// <summary>The reference statistics' covariance in an evaluator folder.</summary>
    public const string ReferenceCovarianceFile = "reference_cov.npy";

    /// <summary>The number of images the reference statistics count (the test set's): the files hold μ and Σ only.</summary>
    public const int ReferenceCount = 10000;

    /// <summary>The reference statistics (the test set's features) in <paramref name="evaluatorDirectory"/>, or null when it has neither file.</summary>
    /// <exception cref="ConfigException">Only one of the two files, or a covariance that does not fit the mean.</exception>
    public static FeatureStatistics? ReadReference(string evaluatorDirectory)
    {
        ArgumentNullException.ThrowIfNull(evaluatorDirectory);
        string meanPath = Path.Combine(evaluatorDirectory, ReferenceMeanFile), covPath = Path.Combine(evaluatorDirectory, ReferenceCovarianceFile);
        if (!File.Exists(meanPath) && !File.Exists(covPath)) return null;
        if (!File.Exists(meanPath) || !File.Exists(covPath))
            throw new ConfigException($"{evaluatorDirectory}: has only one of {ReferenceMeanFile} / {ReferenceCovarianceFile} " +
                                      $"(make both with {OnnxAlignException.Option("referenceImages")} TEST_IMAGES.npy)");
        var mean = NpyFile.Read(meanPath).Data.Select(v => (double)v).ToArray();
        var cov = NpyFile.Read(covPath).Data.Select(v => (double)v).ToArray();
        if (cov.Length != mean.Length * mean.Length) throw new ConfigException($"{covPath}: expected [{mean.Length}, {mean.Length}]");
        return new FeatureStatistics(mean, cov, ReferenceCount);
    }

    /// <summary>Writes these statistics as the reference of <paramref name="evaluatorDirectory"/> (float32 μ and Σ, which <see cref="ReadReference"/> reads).</summary>
    public void WriteReference(string evaluatorDirectory)
    {
        ArgumentNullException.ThrowIfNull(evaluatorDirectory);
        NpyFile.Write(Path.Combine(evaluatorDirectory, ReferenceMeanFile), Mean.Select(v => (float)v).ToArray(), [Mean.Length]);
        NpyFile.Write(Path.Combine(evaluatorDirectory, ReferenceCovarianceFile), Covariance.Select(v => (float)v).ToArray(), [Mean.Length, Mean.Length]);
    }

    private static Matrix<double> SquareRoot(Matrix<double> m)
    {
        var evd = ((m + m.Transpose()) / 2).Evd(Symmetricity.Symmetric);
        var roots = evd.EigenValues.Select(e => Math.Sqrt(Math.Max(e.Real, 0))).ToArray();
        return evd.EigenVectors * Matrix<double>.Build.DenseOfDiagonalArray(roots) * evd.EigenVectors.Transpose();
    }
}

/// <summary>The sample-quality figures of the model card (issue #6): class histogram, confidence and Fréchet distance.</summary>
/// <param name="ClassShares">Fraction of samples predicted as each class.</param>
/// <param name="MeanConfidence">Mean of the largest softmax probability.</param>
/// <param name="FrechetDistance">Fréchet distance of the samples' evaluator features to the reference (test set); null without features or reference statistics.</param>
/// <param name="Count">Samples evaluated.</param>
public sealed record SampleQuality(double[] ClassShares, double MeanConfidence, double? FrechetDistance, int Count)
{
    /// <summary>The largest |share − 1/C| over classes, in percentage points.</summary>
    public double LargestDeviationPoints => ClassShares.Max(s => Math.Abs(s - 1.0 / ClassShares.Length)) * 100;

    /// <summary>Measures an evaluation against reference feature statistics (null: no Fréchet distance).</summary>
    public static SampleQuality Measure(Evaluation evaluation, FeatureStatistics? reference)
    {
        var shares = new double[evaluation.Classes];
        double confidence = 0;
        for (int i = 0; i < evaluation.Count; i++)
        {
            int c = evaluation.Predicted(i);
            shares[c] += 1.0 / evaluation.Count;
            confidence += evaluation.Probability(i, c) / evaluation.Count;
        }
        double? frechet = reference is not null && evaluation.FeatureCount == reference.Mean.Length && evaluation.Count > 1
            ? FeatureStatistics.Of(evaluation).FrechetDistance(reference) : null;
        return new SampleQuality(shares, confidence, frechet, evaluation.Count);
    }

    /// <summary>The real images of an evaluator folder, whose figures are the floor of the samples' (training images, bytes or [−1, 1]).</summary>
    public const string RealImagesFile = "real_u8.npy";

    /// <summary>
    /// The quality figures of <paramref name="count"/> images (samples, or a latent model's decoded samples, of the
    /// evaluator's sample shape, laid out one after another) by <paramref name="evaluator"/>: the class histogram, the
    /// confidence and — when the evaluator has features and its folder the reference statistics — the Fréchet distance;
    /// and the same figures of the folder's real images (<see cref="RealImagesFile"/>) when they have the samples' shape.
    /// </summary>
    /// <exception cref="ConfigException">The reference statistics or the real images cannot be read.</exception>
    public static QualityMeasurement Evaluate(ImageEvaluator evaluator, ReadOnlySpan<float> images, int count)
    {
        ArgumentNullException.ThrowIfNull(evaluator);
        return Measure(evaluator, images, count, ReferenceOf(evaluator));
    }

    // The evaluator folder's reference statistics, where the evaluator has the features they are of: the Fréchet distance
    // needs both; without them the class histogram and confidence are still measured.
    private static FeatureStatistics? ReferenceOf(ImageEvaluator evaluator) => evaluator.HasFeatures ? FeatureStatistics.ReadReference(evaluator.Directory) : null;

    private static QualityMeasurement Measure(ImageEvaluator evaluator, ReadOnlySpan<float> images, int count, FeatureStatistics? reference)
    {
        var shape = evaluator.SampleShape;
        var quality = Measure(evaluator.Evaluate(images, count, shape), reference);
        string realPath = Path.Combine(evaluator.Directory, RealImagesFile);
        // The real-image floor is for samples of the real images' own shape (a latent model's decoded images may differ).
        var real = File.Exists(realPath) ? NpyFile.Read(realPath) : null;
        SampleQuality? floor = null;
        if (real is not null && real.Shape.AsSpan(1).SequenceEqual(shape.ToArray()))
        {
            MapBytes(real);
            floor = Measure(evaluator.Evaluate(real.Data, real.Rows, shape), reference);
        }
        var names = evaluator.ClassNames.Length == quality.ClassShares.Length ? evaluator.ClassNames
            : Enumerable.Range(0, quality.ClassShares.Length).Select(c => c.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        return new QualityMeasurement(quality, floor, reference, names);
    }

    /// <summary>
    /// The quality figures as one call: <paramref name="request"/>'s samples of <paramref name="model"/> (decoded to
    /// images for a latent model, DESIGN §9), then <see cref="Evaluate"/> of them by <paramref name="evaluator"/>, which
    /// must be opened for the model's output shape (<see cref="ConditionedModel.OutputShape"/>).
    /// </summary>
    /// <param name="model">The model, at its conditioning (not disposed here).</param>
    /// <param name="sampler">The reverse-time sampler.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation.</param>
    /// <param name="evaluator">The evaluator (not disposed here).</param>
    /// <param name="progress">The generation's progress.</param>
    /// <exception cref="ArgumentException">The evaluator was opened for another shape than the model's output.</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>.</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired.</exception>
    public static QualityRun Run(ConditionedModel model, Sampler sampler, GenerationRequest request, ImageEvaluator evaluator,
                                 IProgress<GenerationProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(evaluator);
        if (!evaluator.SampleShape.SequenceEqual(model.OutputShape))
            throw new ArgumentException($"the evaluator takes [{string.Join(", ", evaluator.SampleShape)}], the model makes [{string.Join(", ", model.OutputShape)}]", nameof(evaluator));
        var reference = ReferenceOf(evaluator);   // read before the samples are drawn: a broken folder fails at once
        var result = Generation.Run(model.Denoiser, sampler, request, progress is null ? null : progress.Report);
        var images = model.Decode(result.Samples, result.Count, request.Cancellation);
        return new QualityRun(QualityGeneration.Generated(sampler, request.Seed, result.TotalTime.TotalSeconds), Measure(evaluator, images, result.Count, reference));
    }

    /// <summary>Reads images from .npy of rows of <paramref name="shape"/>: values in [−1, 1], or bytes 0..255 (any value above 1), which are mapped to [−1, 1].</summary>
    /// <exception cref="ConfigException">The file cannot be read, or its rows have another shape.</exception>
    public static NpyArray ReadImages(string path, IReadOnlyList<int> shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var array = NpyFile.Read(path);
        int size = shape.Aggregate(1, (a, b) => a * b);
        if (array.RowSize != size) throw new ConfigException($"{path}: shape [{string.Join(", ", array.Shape)}], expected [N, {string.Join(", ", shape)}]");
        MapBytes(array);
        return array;
    }

    /// <summary>
    /// The reference statistics of an evaluator: its features' μ and Σ over the real images in <paramref name="imagesPath"/>
    /// (<see cref="ReadImages"/>; the test set's), written into its folder (<see cref="FeatureStatistics.WriteReference"/>).
    /// Needs only the evaluator, so the reference can be made before any diffusion model exists.
    /// </summary>
    /// <exception cref="ConfigException">The evaluator has no feature output, or the images cannot be read.</exception>
    public static FeatureStatistics WriteReference(ImageEvaluator evaluator, string imagesPath)
    {
        ArgumentNullException.ThrowIfNull(evaluator);
        if (!evaluator.HasFeatures)
            throw new ConfigException($"{evaluator.Directory}: the evaluator has no feature output ('features' in its reward.json), so there are no statistics to write");
        var real = ReadImages(imagesPath, evaluator.SampleShape);
        var stats = FeatureStatistics.Of(evaluator.Evaluate(real.Data, real.Rows, evaluator.SampleShape));
        stats.WriteReference(evaluator.Directory);
        return stats;
    }

    private static void MapBytes(NpyArray array)
    {
        if (array.Data.Any(v => v > 1.0001f))
            for (int i = 0; i < array.Data.Length; i++) array.Data[i] = array.Data[i] / 127.5f - 1f;
    }
}

/// <summary>What <see cref="SampleQuality.Evaluate"/> measured.</summary>
/// <param name="Samples">The samples' figures.</param>
/// <param name="RealFloor">The same figures of the evaluator folder's real images (the floor), or null without them.</param>
/// <param name="Reference">The reference statistics the Fréchet distances are to, or null.</param>
/// <param name="ClassNames">A name per class of <see cref="SampleQuality.ClassShares"/> (its index where the evaluator names none).</param>
public sealed record QualityMeasurement(SampleQuality Samples, SampleQuality? RealFloor, FeatureStatistics? Reference, IReadOnlyList<string> ClassNames);

/// <summary>Samples of a model and their quality figures (<see cref="SampleQuality.Run"/>).</summary>
/// <param name="Generation">How the samples were made.</param>
/// <param name="Measurement">Their figures.</param>
public sealed record QualityRun(QualityGeneration Generation, QualityMeasurement Measurement);

/// <summary>
/// Where the measured samples came from, as the quality report's <c>generation</c> holds it: samples the caller gave
/// (<see cref="Given"/>: <c>samples</c>) or generated ones (<see cref="Generated"/>: <c>sampler</c>, <c>steps</c>,
/// <c>seed</c>, <c>seconds</c>); the other kind's fields are left out.
/// </summary>
/// <param name="Samples">The given samples' file or folder.</param>
/// <param name="Sampler">The sampler of generated samples.</param>
/// <param name="Steps">Its steps.</param>
/// <param name="Seed">The seed (sample i uses noise stream seed + i).</param>
/// <param name="Seconds">The generation's wall time.</param>
public sealed record QualityGeneration(
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Samples,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Sampler,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] int? Steps,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? Seed,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? Seconds)
{
    /// <summary>Samples the caller gave, from <paramref name="samples"/>.</summary>
    public static QualityGeneration Given(string samples) => new(samples, null, null, null, null);

    /// <summary>Samples of <paramref name="sampler"/> from <paramref name="seed"/>, made in <paramref name="seconds"/>.</summary>
    public static QualityGeneration Generated(Sampler sampler, long seed, double seconds)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        return new(null, sampler.Name, sampler.Steps, seed, seconds);
    }
}

/// <summary>The real images' figures in the quality report (<c>real_floor</c>).</summary>
/// <param name="Count">Real images evaluated.</param>
/// <param name="FrechetDistance">Their Fréchet distance to the reference, or null.</param>
/// <param name="MeanConfidence">Their mean confidence.</param>
public sealed record QualityFloorReport(int Count, double? FrechetDistance, double MeanConfidence);

/// <summary>
/// The quality figures as <c>onnxalign quality --out FILE</c> writes them, serialised by <see cref="IO.ReportJson"/>
/// (a figure that is not finite is written as null).
/// </summary>
/// <param name="Model">The network file of the model.</param>
/// <param name="Generation">Where the samples came from.</param>
/// <param name="Count">Samples evaluated.</param>
/// <param name="ClassShares">The fraction of the samples predicted as each class, by class name, in the evaluator's order.</param>
/// <param name="LargestDeviationPoints">The largest |share − 1/C| over classes, in percentage points.</param>
/// <param name="MeanConfidence">The mean of the largest softmax probability.</param>
/// <param name="FrechetDistance">The Fréchet distance to the reference, or null.</param>
/// <param name="RealFloor">The real images' figures, or null.</param>
/// <param name="ReferenceCount">The images the reference statistics count, or null without them.</param>
public sealed record QualityReport(string Model, QualityGeneration Generation, int Count, IReadOnlyDictionary<string, double> ClassShares,
                                   double LargestDeviationPoints, double MeanConfidence, double? FrechetDistance, QualityFloorReport? RealFloor,
                                   int? ReferenceCount)
{
    /// <summary>The report of <paramref name="measurement"/> of samples of <paramref name="model"/> (its network file) made as <paramref name="generation"/> says.</summary>
    /// <exception cref="ArgumentException">Two classes have the same name.</exception>
    public static QualityReport Of(string model, QualityGeneration generation, QualityMeasurement measurement)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(generation);
        ArgumentNullException.ThrowIfNull(measurement);
        var q = measurement.Samples;
        var shares = new Dictionary<string, double>(StringComparer.Ordinal);
        for (int c = 0; c < q.ClassShares.Length; c++)
            if (!shares.TryAdd(measurement.ClassNames[c], q.ClassShares[c]))
                throw new ArgumentException($"two classes are named '{measurement.ClassNames[c]}'", nameof(measurement));
        var floor = measurement.RealFloor is { } f ? new QualityFloorReport(f.Count, f.FrechetDistance, f.MeanConfidence) : null;
        return new QualityReport(model, generation, q.Count, shares, q.LargestDeviationPoints, q.MeanConfidence, q.FrechetDistance, floor, measurement.Reference?.Count);
    }
}
