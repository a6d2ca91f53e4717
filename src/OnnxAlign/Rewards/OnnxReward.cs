using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Rewards;

/// <summary>
/// A reward that is a network (DESIGN §8): r(x) = one value of an ONNX image model's output, raw or as a log-softmax
/// (a classifier's log-probability of a class), fed as its <see cref="RewardCard"/> says. It has no structure and no
/// gradient: KL alignment samples p·e^{r/λ} by the black-box methods (tilts as proposals, exact weights), and
/// <c>fit-reward</c> turns it into a linear or low-rank reward for the exact methods and the prox.
/// </summary>
/// <remarks>Thread-safe (calls are serialised); owns its session: dispose it.</remarks>
public sealed class OnnxReward : BatchReward
{
    private readonly OnnxImageModel _model;
    private readonly int _outputs;

    /// <summary>Opens the reward <c>onnx:PATH[@CLASS]</c> for samples of <paramref name="sampleShape"/>.</summary>
    /// <param name="name">The spec, for reports.</param>
    /// <param name="path">A folder with <c>reward.json</c> and the model, or a <c>.onnx</c> file with its card beside it.</param>
    /// <param name="index">The class (a number or a name from classes.json); null for the card's <c>index</c>.</param>
    /// <param name="sampleShape">[C, H, W] of the diffusion model's samples.</param>
    /// <param name="range">The samples' data range (null: [−1, 1], the PNGs' convention).</param>
    /// <param name="options">How the network is run (device, threads, the session seam).</param>
    /// <exception cref="ConfigException">A missing or malformed card, a model that does not fit it, an unknown class; one line (parameter <c>reward</c>).</exception>
    public OnnxReward(string name, string path, string? index, IReadOnlyList<int> sampleShape, DataRange? range, DenoiserOptions? options = null)
        : base(name, sampleShape.Aggregate(1, (a, b) => a * b))
    {
        var card = RewardCard.Read(path);
        _model = new OnnxImageModel(card, sampleShape, range, options);
        try
        {
            _outputs = _model.OutputSizes[0];
            string? which = index ?? card.Index;
            if (which is null && _outputs != 1)
                throw ConfigException.For("reward", $"'{name}': output '{_model.OutputName}' has {_outputs} values per sample; name one (onnx:PATH@CLASS, or 'index' in {card.Source})");
            if (card.Transform == "log_softmax" && _outputs < 2)
                throw ConfigException.For("reward", $"'{name}': log_softmax needs an output of several classes, '{_model.OutputName}' has {_outputs} value per sample");
            Index = which is null ? 0 : card.ResolveIndex(which, _outputs);
            IndexName = Index < card.ClassNames.Length ? card.ClassNames[Index] : Index.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        catch
        {
            _model.Dispose();
            throw;
        }
    }

    /// <summary>The card the model is fed by.</summary>
    public RewardCard Card => _model.Card;

    /// <summary>The output value that is the reward.</summary>
    public int Index { get; }

    /// <summary>The class name of <see cref="Index"/> (its number when classes.json is absent).</summary>
    public string IndexName { get; }

    /// <summary>Samples evaluated so far (for reports: reward evaluations per returned sample).</summary>
    public long Evaluations => _model.Evaluations;

    /// <summary>The image model (its input shape, outputs).</summary>
    public OnnxImageModel Model => _model;


    /// <summary>The raw output rows [n × outputs] of a batch (for <c>fit-reward</c>'s low-rank fit of all classes).</summary>
    public float[] Outputs(ReadOnlySpan<float> samples) => _model.Run(samples, samples.Length / Size, [_model.OutputName], NetworkCancellation.Current)[0];

    /// <inheritdoc/>
    public override double[] EvaluateBatch(ReadOnlySpan<float> samples)
    {
        int n = samples.Length / Size;
        var outputs = Outputs(samples);
        var r = new double[n];
        var row = new double[_outputs];
        for (int i = 0; i < n; i++)
        {
            if (Card.Transform == "raw") { r[i] = outputs[(long)i * _outputs + Index]; continue; }
            for (int c = 0; c < _outputs; c++) row[c] = outputs[(long)i * _outputs + c];
            r[i] = row[Index] - Numerics.LogSumExp(row);
        }
        return r;
    }

    /// <inheritdoc/>
    protected override string NoGradient => $"'{Name}' is a network reward without a gradient; fit a linear or low-rank reward to it (fit-reward) for gradient-based methods";

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing) _model.Dispose();
    }
}
