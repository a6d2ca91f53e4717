using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Optimization;
using System.Numerics.Tensors;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>A tilt fitted to preferences, and how well it predicts them.</summary>
/// <param name="Theta">θ of q ∝ p·exp⟨θ, x⟩ (the implicit reward is β⟨θ, x⟩).</param>
/// <param name="Intercept">The reference point of the unpaired (KTO-style) fit; 0 for pairs.</param>
/// <param name="TrainAccuracy">Fraction of training pairs (labels) the fit orders (classifies) correctly.</param>
/// <param name="HeldOutAccuracy">The same on the held-out part.</param>
/// <param name="TrainCount">Training pairs (labels).</param>
/// <param name="HeldOutCount">Held-out pairs (labels).</param>
public sealed record PreferenceFit(float[] Theta, double Intercept, double TrainAccuracy, double HeldOutAccuracy, int TrainCount, int HeldOutCount)
{
    /// <summary>True when the fit was read back from a checkpoint (a resumed run) rather than fitted.</summary>
    [JsonIgnore]
    public bool Resumed { get; init; }
}

/// <summary>
/// Preference data (issue #7): pairs (preferred[i] over rejected[i]) or unpaired samples labelled desirable or
/// undesirable (KTO-style). Samples are flat, one sample's values after another.
/// </summary>
public sealed class PreferenceData
{
    private PreferenceData(float[] first, float[]? rejected, bool[]? desirable, string? source) =>
        (Samples, Rejected, Desirable, Source) = (first, rejected, desirable, source);

    /// <summary>The preferred samples of the pairs, or the unpaired samples.</summary>
    public float[] Samples { get; }

    /// <summary>The rejected sample of each pair; null for unpaired data.</summary>
    public float[]? Rejected { get; }

    /// <summary>Each unpaired sample's label (true: desirable); null for pairs.</summary>
    public IReadOnlyList<bool>? Desirable { get; }

    /// <summary>Where the data came from (the folder), for the report; null when given in memory.</summary>
    public string? Source { get; }

    /// <summary>Pairs: <paramref name="preferred"/>[i] is preferred over <paramref name="rejected"/>[i].</summary>
    public static PreferenceData Pairs(float[] preferred, float[] rejected, string? source = null) => new(preferred, rejected, null, source);

    /// <summary>Unpaired samples with one label each (true: desirable).</summary>
    public static PreferenceData Unpaired(float[] samples, IReadOnlyList<bool> desirable, string? source = null) => new(samples, null, desirable.ToArray(), source);

    /// <summary>
    /// A preference folder: <c>preferred/</c> and <c>rejected/</c> (pairs, matched by sorted name), or <c>desirable/</c>
    /// and <c>undesirable/</c> (unpaired); each an image folder or a <c>samples.npy</c> (<see cref="SampleSetReader"/>).
    /// </summary>
    /// <exception cref="ConfigException">No such subfolders, an unreadable set, samples of another shape, or unequal pair counts (parameter <c>preferences</c>).</exception>
    public static PreferenceData Read(string folder, IReadOnlyList<int> sampleShape)
    {
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        SampleSet Set(string sub)
        {
            string path = Path.Combine(folder, sub);
            SampleSet set;
            try { set = SampleSetReader.Read(path); }
            catch (ConfigException e) { throw ConfigException.For("preferences", $"{folder}: {e.Message}", e); }
            if (set.Samples.Length != set.Count * size)
                throw ConfigException.For("preferences", $"{folder}: {path} holds samples of shape [{string.Join(", ", set.SampleShape)}], the model's are [{string.Join(", ", sampleShape)}]");
            return set;
        }
        if (Directory.Exists(Path.Combine(folder, "preferred")) && Directory.Exists(Path.Combine(folder, "rejected")))
        {
            var (w, l) = (Set("preferred"), Set("rejected"));
            if (w.Count != l.Count) throw ConfigException.For("preferences", $"{folder}: {w.Count} preferred but {l.Count} rejected samples; pairs are matched by sorted name");
            return Pairs(w.Samples, l.Samples, folder);
        }
        if (Directory.Exists(Path.Combine(folder, "desirable")) && Directory.Exists(Path.Combine(folder, "undesirable")))
        {
            var (good, bad) = (Set("desirable"), Set("undesirable"));
            return Unpaired([.. good.Samples, .. bad.Samples], [.. Enumerable.Repeat(true, good.Count), .. Enumerable.Repeat(false, bad.Count)], folder);
        }
        throw ConfigException.For("preferences", $"{folder}: expected subfolders preferred/ and rejected/ (pairs) or desirable/ and undesirable/ (unpaired)");
    }
}

/// <summary>Settings of <see cref="PreferenceAlignment.Run"/>.</summary>
public sealed record PreferenceSettings
{
    /// <summary>DPO's β: the implicit reward is β⟨θ, x⟩.</summary>
    public double Beta { get; init; } = 1;

    /// <summary>The L2 weight of the fit.</summary>
    public double L2 { get; init; } = 1e-3;

    /// <summary>The fraction of pairs (labels), the last ones, held out to measure the fit.</summary>
    public double HeldOut { get; init; } = 0.2;

    /// <summary>How the fitted tilt is sampled: <see cref="KlTiltMode.Exact"/> (SMC with <see cref="Exact"/>) or <see cref="KlTiltMode.Fast"/>; hybrid is refused.</summary>
    public KlTiltMode FinalMode { get; init; } = KlTiltMode.Exact;

    /// <summary>The exact mode's SMC settings (count and seed are the request's).</summary>
    public ExactTiltSettings Exact { get; init; } = new();

    /// <summary>Checks the values before any work is done.</summary>
    /// <exception cref="ConfigException">β or the L2 weight is not finite and positive (parameters <c>beta</c>, <c>l2</c>), the held-out fraction is not in [0, 1), or the hybrid mode (parameter <c>mode</c>).</exception>
    public PreferenceSettings Validated()
    {
        if (!(Beta > 0) || !double.IsFinite(Beta)) throw ConfigException.For("beta", $"{Beta}: expected a finite value > 0");
        if (!(L2 > 0) || !double.IsFinite(L2)) throw ConfigException.For("l2", $"{L2}: expected a finite value > 0");
        if (!(HeldOut is >= 0 and < 1)) throw ConfigException.For("heldOut", $"{HeldOut}: expected a fraction in [0, 1)");
        FinalTilt.CheckMode(FinalMode);
        return this;
    }
}

/// <summary>report.json's <c>preferences</c> block, serialised by <see cref="IO.ReportJson"/>.</summary>
/// <param name="Folder">The preference folder (null for data given in memory).</param>
/// <param name="Beta">DPO's β.</param>
/// <param name="L2">The L2 weight.</param>
/// <param name="ThetaNorm">‖θ‖.</param>
/// <param name="Intercept">The unpaired fit's reference point (0 for pairs).</param>
/// <param name="TrainCount">Training pairs (labels).</param>
/// <param name="TrainAccuracy">Their accuracy.</param>
/// <param name="HeldOutCount">Held-out pairs (labels).</param>
/// <param name="HeldOutAccuracy">Their accuracy (null in JSON when none are held out).</param>
public sealed record PreferenceReport(string? Folder, double Beta, double L2, double ThetaNorm, double Intercept, int TrainCount, double TrainAccuracy,
                                      int HeldOutCount, double HeldOutAccuracy);

/// <summary>What <see cref="PreferenceAlignment.Run"/> returned.</summary>
/// <param name="Fit">The fitted tilt and its accuracies.</param>
/// <param name="Report">report.json's <c>preferences</c> block.</param>
/// <param name="Final">The fitted tilt sampled, with its <c>final_tilt</c> block.</param>
public sealed record PreferenceAlignmentResult(PreferenceFit Fit, PreferenceReport Report, FinalTilt Final)
{
    /// <summary>True when the fit came from the checkpoint (a resumed run) rather than being fitted again.</summary>
    public bool Resumed => Fit.Resumed;
}

/// <summary>
/// Inference-time DPO on the tilt family (DESIGN §5, issue #7): with q_θ ∝ p·exp⟨θ, x⟩ the DPO implicit reward is
/// β log(q_θ/p) = β⟨θ, x⟩ − β log Z(θ), so the Bradley–Terry likelihood of a pair is σ(β⟨θ, x_w − x_l⟩) and fitting θ is
/// L2-regularised logistic regression on the differences x_w − x_l (convex; L-BFGS). q_θ is then sampled exactly.
/// The KTO-style variant takes unpaired labels (desirable / undesirable): σ(±(β⟨θ, x⟩ − z₀)) with a fitted reference z₀.
/// </summary>
public static class PreferenceAlignment
{
    /// <summary>
    /// Fits θ to the preferences, then samples q_θ in <see cref="PreferenceSettings.FinalMode"/>: the library entry point
    /// of preference alignment (what <c>onnxalign align --preferences</c> runs).
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="data">Pairs or labelled samples of the model's sample size.</param>
    /// <param name="settings">β, the L2 weight, the held-out fraction and the final tilt's mode.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation of the samples.</param>
    /// <param name="progress">Samples finished (exact tilt: effective samples of the target).</param>
    /// <param name="checkpoint">
    /// A resumable run's checkpoint, null for none: the fit and its report block are saved there once found and read
    /// back by a resumed run instead of fitting again (<see cref="PreferenceAlignmentResult.Resumed"/>), and the final
    /// tilt keeps its finished batches (or SMC systems) there. The caller keys it to everything that determines the run.
    /// </param>
    /// <param name="fitted">The fit and its report block, fitted or read back, before the tilt is sampled (and, when fitted, before it is saved to <paramref name="checkpoint"/>).</param>
    /// <exception cref="ConfigException">A setting out of range (see <see cref="PreferenceSettings.Validated"/>); a checkpoint whose saved fit is of another sample size (parameter <c>checkpoint</c>).</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired (within one network call).</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/> (the fit is kept in the checkpoint).</exception>
    public static PreferenceAlignmentResult Run(IDenoiser network, DataRange? range, Sampler sampler, PreferenceData data, PreferenceSettings settings,
                                                GenerationRequest request, IProgress<GenerationProgress>? progress = null, BatchCheckpoint? checkpoint = null,
                                                IProgress<(PreferenceFit Fit, PreferenceReport Report)>? fitted = null)
    {
        PreferenceFit fit;
        PreferenceReport report;
        if (SolutionNote.Read<PreferenceNote>(checkpoint) is { } note)
        {
            settings.Validated();
            SolutionNote.CheckSizes(note.Fit.Theta.Length == network.SampleSize);
            (fit, report) = (note.Fit with { Resumed = true }, note.Report);
            fitted?.Report((fit, report));
        }
        else
        {
            (fit, report) = Fit(data, network.SampleSize, settings);
            fitted?.Report((fit, report));
            SolutionNote.Write(checkpoint, new PreferenceNote(fit, report));
        }
        return new PreferenceAlignmentResult(fit, report, FinalTilt.Sample(network, range, sampler, fit.Theta, settings.FinalMode, settings.Exact, request, progress, checkpoint));
    }

    /// <summary>Fits θ to pairs or labels (the global set-up of a preference run, DESIGN §10), with its report block.</summary>
    /// <exception cref="ConfigException">A setting out of range (see <see cref="PreferenceSettings.Validated"/>).</exception>
    public static (PreferenceFit Fit, PreferenceReport Report) Fit(PreferenceData data, int size, PreferenceSettings settings)
    {
        settings.Validated();
        var fit = data.Rejected is { } rejected
            ? FitPairs(data.Samples, rejected, size, settings.Beta, settings.L2, settings.HeldOut)
            : FitUnpaired(data.Samples, data.Desirable!, size, settings.Beta, settings.L2, settings.HeldOut);
        var report = new PreferenceReport(data.Source, settings.Beta, settings.L2, Math.Sqrt(fit.Theta.Sum(v => (double)v * v)), fit.Intercept,
                                          fit.TrainCount, fit.TrainAccuracy, fit.HeldOutCount, fit.HeldOutAccuracy);
        return (fit, report);
    }

    /// <summary>Fits θ to pairs (preferred[i], rejected[i]); the last <paramref name="heldOut"/> fraction is held out.</summary>
    public static PreferenceFit FitPairs(ReadOnlySpan<float> preferred, ReadOnlySpan<float> rejected, int size, double beta = 1, double l2 = 1e-3, double heldOut = 0.2)
    {
        if (preferred.Length != rejected.Length || preferred.Length % size != 0 || preferred.Length == 0)
            throw new ArgumentException("preferred and rejected must hold the same number of samples of the model's size");
        int n = preferred.Length / size;
        var differences = new float[preferred.Length];
        TensorPrimitives.Subtract(preferred, rejected, differences);
        return Fit(differences, Enumerable.Repeat(1.0, n).ToArray(), size, beta, l2, heldOut, intercept: false);
    }

    /// <summary>KTO-style: fits θ and a reference point z₀ to unpaired samples labelled desirable (true) or undesirable (false).</summary>
    public static PreferenceFit FitUnpaired(ReadOnlySpan<float> samples, IReadOnlyList<bool> desirable, int size, double beta = 1, double l2 = 1e-3, double heldOut = 0.2)
    {
        if (samples.Length != desirable.Count * size || desirable.Count == 0) throw new ArgumentException("one label per sample");
        return Fit(samples.ToArray(), desirable.Select(d => d ? 1.0 : -1.0).ToArray(), size, beta, l2, heldOut, intercept: true);
    }

    /// <summary>min over (θ, z₀) of Σ_i softplus(−y_i(β⟨θ, v_i⟩ − z₀)) + (l2/2)‖θ‖² on the training rows, then accuracies.</summary>
    private static PreferenceFit Fit(float[] rows, double[] labels, int size, double beta, double l2, double heldOut, bool intercept)
    {
        if (!(beta > 0) || !(l2 > 0)) throw new ArgumentException("β and the L2 weight must be > 0");
        int n = labels.Length, train = Math.Max(1, (int)Math.Round(n * (1 - heldOut)));
        int dim = size + (intercept ? 1 : 0);
        (double, Vector<double>) Loss(Vector<double> w)
        {
            // In double throughout: a float θ would make the objective step-like at the scale L-BFGS's line search probes.
            double z0 = intercept ? w[size] : 0, loss = 0;
            var gradient = new double[dim];
            for (int i = 0; i < train; i++)
            {
                double dot = 0;
                for (int j = 0; j < size; j++) dot += rows[i * size + j] * w[j];
                double margin = labels[i] * (beta * dot - z0);
                // softplus(−m) = log(1 + e^{−m}), overflow-safe; its derivative in m is −σ(−m).
                loss += margin > 0 ? double.LogP1(Math.Exp(-margin)) : -margin + double.LogP1(Math.Exp(margin));
                double weight = -labels[i] / (1 + Math.Exp(margin));
                for (int j = 0; j < size; j++) gradient[j] += weight * beta * rows[i * size + j];
                if (intercept) gradient[size] -= weight;
            }
            for (int j = 0; j < size; j++) { loss += 0.5 * l2 * w[j] * w[j]; gradient[j] += l2 * w[j]; }
            return (loss / train, Vector<double>.Build.DenseOfArray(gradient) / train);
        }
        var minimum = new LimitedMemoryBfgsMinimizer(1e-8, 1e-12, 1e-12, 10, 2000)
            .FindMinimum(ObjectiveFunction.Gradient(Loss), Vector<double>.Build.Dense(dim)).MinimizingPoint;
        var thetaFit = minimum.Take(size).Select(v => (float)v).ToArray();
        double z = intercept ? minimum[size] : 0;
        double Accuracy(int from, int to) => to <= from ? double.NaN
            : Enumerable.Range(from, to - from).Count(i => labels[i] * (beta * TensorPrimitives.Dot(rows.AsSpan(i * size, size), thetaFit) - z) > 0) / (double)(to - from);
        return new PreferenceFit(thetaFit, z, Accuracy(0, train), Accuracy(train, n), train, n - train);
    }
}
