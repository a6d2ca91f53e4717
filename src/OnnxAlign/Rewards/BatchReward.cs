namespace OnnxAlign.Rewards;

/// <summary>
/// A reward computed by a network in batches, with no gradient (DESIGN §8): one sample is a batch of one, a sample in
/// double precision is rounded to float32 first. KL alignment serves it by the black-box methods.
/// </summary>
public abstract class BatchReward : Reward
{
    /// <summary>A reward named <paramref name="name"/> on samples of <paramref name="size"/> values.</summary>
    protected BatchReward(string name, int size) : base(name, size) { }

    /// <summary>Why there is no gradient, and what to do instead (the message of <see cref="Gradient"/>).</summary>
    protected abstract string NoGradient { get; }

    /// <inheritdoc/>
    public override bool HasGradient => false;

    /// <inheritdoc/>
    public abstract override double[] EvaluateBatch(ReadOnlySpan<float> samples);

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<float> x) => EvaluateBatch(x)[0];

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<double> x)
    {
        var single = new float[x.Length];
        for (int i = 0; i < x.Length; i++) single[i] = (float)x[i];
        return Evaluate(single);
    }

    /// <summary>Not available: the network is run without gradients.</summary>
    /// <exception cref="NotSupportedException">Always.</exception>
    public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient) => throw new NotSupportedException(NoGradient);
}
